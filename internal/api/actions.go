package api

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
)

// Actions: commands a process server or a master target runs once and
// reports — a recovery plan's scripts, run at the site where the plan
// acts (internal/server/planjobs.go). The server gives an action to one
// component through its desired state until the component reports it;
// they live in memory: a restarted server asks again only what a plan
// run asks again. A component that restarts while an action runs
// reports it not run again (internal/manage/actions.go).

// DesiredAction is a command a component runs once.
type DesiredAction struct {
	ID      string        `json:"id"`
	Command []string      `json:"command"`
	Env     []string      `json:"env,omitempty"` // KEY=VALUE
	Timeout time.Duration `json:"timeout"`
}

// ActionReport is what a component says of an action.
type ActionReport struct {
	ID     string `json:"id"`
	OK     bool   `json:"ok"`               // it exited 0
	Output string `json:"output,omitempty"` // the end of its output
	Error  string `json:"error,omitempty"`  // how it failed
}

// actionSet is the actions given out, by component id, and their
// reports, by action id.
type actionSet struct {
	mu      sync.Mutex
	want    map[string][]DesiredAction
	owner   map[string]string // action id -> component id
	reports map[string]ActionReport
}

func (a *actionSet) forComponent(id string) []DesiredAction {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.want[id])
}

// RunAction gives action act to component comp and waits for its report
// (or for ctx). The action is withdrawn when the call returns.
func (s *Server) RunAction(ctx context.Context, comp string, act DesiredAction) (ActionReport, error) {
	a := &s.actions
	a.mu.Lock()
	if a.want == nil {
		a.want, a.owner, a.reports = map[string][]DesiredAction{}, map[string]string{}, map[string]ActionReport{}
	}
	if _, dup := a.owner[act.ID]; !dup {
		a.want[comp] = append(a.want[comp], act)
		a.owner[act.ID] = comp
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.want[comp] = slices.DeleteFunc(a.want[comp], func(x DesiredAction) bool { return x.ID == act.ID })
		delete(a.owner, act.ID)
		delete(a.reports, act.ID)
		a.mu.Unlock()
		s.desired.notify()
	}()
	s.desired.notify()
	for {
		changed := s.desired.wait()
		a.mu.Lock()
		r, ok := a.reports[act.ID]
		a.mu.Unlock()
		if ok {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return ActionReport{}, ctx.Err()
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// reportAction records the calling component's report of an action it
// was given.
func (s *Server) reportAction(ctx context.Context, r ActionReport) error {
	comp := principalOf(ctx).comp
	a := &s.actions
	a.mu.Lock()
	owner, ok := a.owner[r.ID]
	if ok && owner == comp.ID {
		if len(r.Output) > 4096 {
			r.Output = r.Output[len(r.Output)-4096:]
		}
		a.reports[r.ID] = r
	}
	a.mu.Unlock()
	if !ok || owner != comp.ID {
		return errorf(http.StatusConflict, "action %q was not given to this component (%s)", r.ID, comp.ID)
	}
	s.desired.notify()
	return nil
}

func (s *Server) componentAction(w http.ResponseWriter, r *http.Request) (any, error) {
	var req ActionReport
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	return nil, s.reportAction(r.Context(), req)
}

func (c componentService) ReportAction(ctx context.Context, req *pb.ReportActionRequest) (*pb.ReportActionResponse, error) {
	if err := c.s.reportAction(ctx, ActionReport{ID: req.GetId(), OK: req.GetOk(), Output: req.GetOutput(), Error: req.GetError()}); err != nil {
		return nil, err
	}
	return &pb.ReportActionResponse{}, nil
}

func actionsToPB(as []DesiredAction) []*pb.DesiredAction {
	var out []*pb.DesiredAction
	for _, a := range as {
		out = append(out, &pb.DesiredAction{Id: a.ID, Command: a.Command, Env: a.Env, TimeoutSeconds: int64(a.Timeout / time.Second)})
	}
	return out
}

func actionsFromPB(as []*pb.DesiredAction) []DesiredAction {
	var out []DesiredAction
	for _, a := range as {
		out = append(out, DesiredAction{ID: a.GetId(), Command: a.GetCommand(), Env: a.GetEnv(), Timeout: time.Duration(a.GetTimeoutSeconds()) * time.Second})
	}
	return out
}
