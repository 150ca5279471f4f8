package api

import (
	"encoding/json"
	"net/http"

	"github.com/standby-dr/standby/internal/control"
)

// groupRequest creates a protection group or changes its policy. Fields
// of Policy left out keep their defaults (on create) or their current
// values (on update): the body is merged over them.
type groupRequest struct {
	Name   string          `json:"name"`
	Policy json.RawMessage `json:"policy,omitempty"`
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.ListGroups(r.Context())
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.GroupByName(r.Context(), r.PathValue("name"))
}

// mergePolicy reads raw over base, refusing unknown fields, and validates
// the result.
func mergePolicy(base control.Policy, raw json.RawMessage) (control.Policy, error) {
	p := base
	if len(raw) > 0 {
		dec := json.NewDecoder(bytesReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return p, errorf(http.StatusBadRequest, "policy: %v", err)
		}
	}
	if err := p.Validate(); err != nil {
		return p, errorf(http.StatusBadRequest, "policy: %v", err)
	}
	return p, nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	var req groupRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := checkName("group", req.Name); err != nil {
		return nil, err
	}
	p, err := mergePolicy(control.DefaultPolicy(), req.Policy)
	if err != nil {
		return nil, err
	}
	now := s.now()
	g := control.Group{ID: newID(), Name: req.Name, Policy: p, CreatedAt: now, UpdatedAt: now}
	err = s.o.Store.CreateGroup(r.Context(), g)
	s.audit(r.Context(), "group.create", "group/"+req.Name, err, string(req.Policy))
	if err != nil {
		return nil, err
	}
	return &response{http.StatusCreated, g}, nil
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	var req groupRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if req.Name != "" && req.Name != name {
		return nil, errorf(http.StatusBadRequest, "name %q in the body differs from %q in the path: groups are not renamed", req.Name, name)
	}
	g, err := s.o.Store.GroupByName(r.Context(), name)
	if err != nil {
		return nil, err
	}
	if g.Policy, err = mergePolicy(g.Policy, req.Policy); err != nil {
		return nil, err
	}
	g.UpdatedAt = s.now()
	err = s.o.Store.UpdateGroup(r.Context(), g)
	s.audit(r.Context(), "group.update", "group/"+name, err, string(req.Policy))
	if err != nil {
		return nil, err
	}
	s.desired.notify() // the group's machines' policy changed
	return g, nil
}
