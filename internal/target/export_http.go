package target

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// mountExports adds the exports' endpoints to the status listener:
//
//	POST   /exports         {"machine", "point", "name"} → 201 Export
//	GET    /exports         → [Export]
//	GET    /exports/{name}  → Export
//	DELETE /exports/{name}  → 204
//
// Errors are {"error": "..."} with 400 (bad request), 404 (no machine,
// point or export), 409 (name taken) or 503 (exports off).
func (t *Target) mountExports(mux *http.ServeMux) {
	mux.HandleFunc("POST /exports", func(w http.ResponseWriter, r *http.Request) {
		var req ExportRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("export request: %w (want {\"machine\": ..., \"point\": ...})", err))
			return
		}
		if req.Machine == "" {
			writeError(w, http.StatusBadRequest, errors.New("export request: machine is required (a name or an id)"))
			return
		}
		x, err := t.Export(r.Context(), req)
		if err != nil {
			writeError(w, exportStatus(err), err)
			return
		}
		writeJSON(w, http.StatusCreated, x)
	})
	mux.HandleFunc("GET /exports", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, t.Exports())
	})
	mux.HandleFunc("GET /exports/{name}", func(w http.ResponseWriter, r *http.Request) {
		x, err := t.ExportByName(r.PathValue("name"))
		if err != nil {
			writeError(w, exportStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, x)
	})
	mux.HandleFunc("DELETE /exports/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := t.Unexport(r.Context(), r.PathValue("name")); err != nil {
			writeError(w, exportStatus(err), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// exportStatus is the HTTP status of an export error.
func exportStatus(err error) int {
	switch {
	case errors.Is(err, ErrExportsOff):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrNoMachine), errors.Is(err, ErrNoPoint), errors.Is(err, ErrNoExport):
		return http.StatusNotFound
	case errors.Is(err, ErrExportExists):
		return http.StatusConflict
	case errors.Is(err, ErrBadSelector), errors.Is(err, errBadExportName):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
