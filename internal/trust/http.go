package trust

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/standby-dr/standby/internal/control"
)

// The endpoints of the configuration server that this package serves.
const (
	JoinPath    = "/v1/join"
	RenewPath   = "/v1/renew"
	CRLPath     = "/v1/crl"
	RevokedPath = "/v1/revoked"
)

// maxBody bounds a request body: a join request is a token, a few names
// and a CSR, well under 8 KiB.
const maxBody = 64 << 10

// errorBody is every error answer: the message for people, the code for
// programs (errorCodes).
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Handler serves POST /v1/join (TLS without a client certificate: the
// joiner has none yet), POST /v1/renew (mutual TLS: the certificate to be
// renewed authenticates the call), GET /v1/revoked (mutual TLS: the
// revoked servers, JSON, for roles to check each other) and GET /v1/crl
// (the same serials as an X.509 CRL, DER). Mount it for those four paths
// on the configuration server's listener (ListenerTLS).
func (r *Registrar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+JoinPath, r.serveJoin)
	v := &Verifier{Roots: r.CA.Pool(), Roles: control.Roles, Revoked: r.Revoked, Usage: x509.ExtKeyUsageClientAuth, Now: r.Now}
	mux.Handle("POST "+RenewPath, v.Require(http.HandlerFunc(r.serveRenew)))
	mux.HandleFunc("GET "+CRLPath, r.serveCRL)
	mux.Handle("GET "+RevokedPath, v.Require(http.HandlerFunc(r.serveRevoked)))
	return mux
}

func (r *Registrar) serveJoin(w http.ResponseWriter, req *http.Request) {
	var jr JoinRequest
	if err := decodeJSON(w, req, &jr); err != nil {
		writeError(w, err)
		return
	}
	resp, err := r.Join(req.Context(), jr)
	if err != nil {
		r.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (r *Registrar) serveRenew(w http.ResponseWriter, req *http.Request) {
	peer, ok := PeerFrom(req.Context())
	if !ok {
		writeError(w, fmt.Errorf("renew: %w", ErrNoCert)) // Require did not run: a wiring error
		return
	}
	var rr RenewRequest
	if err := decodeJSON(w, req, &rr); err != nil {
		writeError(w, err)
		return
	}
	resp, err := r.Renew(req.Context(), peer, rr.CSR)
	if err != nil {
		r.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodeJSON reads exactly one JSON object with known fields only, of at
// most maxBody bytes.
func decodeJSON(w http.ResponseWriter, req *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("request body is over %d bytes: %w", maxBody, ErrMalformed)
		}
		return fmt.Errorf("request body: %v: %w", err, ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("request body: more than one JSON value: %w", ErrMalformed)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // the client went away if this fails
}

// writeError answers err as {"error", "code"} with the status errorCodes
// gives it. An internal error's text stays in the server's log.
func writeError(w http.ResponseWriter, err error) {
	code, status := classify(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error; see the configuration server's log"
	}
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

func (r *Registrar) writeError(w http.ResponseWriter, err error) {
	if _, status := classify(err); status == http.StatusInternalServerError {
		r.log().Error("trust endpoint failed", "err", err)
	}
	writeError(w, err)
}

// RemoteError is an error answer of the configuration server. It matches
// the sentinel its code names with errors.Is, so a client tests
// errors.Is(err, ErrTokenUsed) as the server does.
type RemoteError struct {
	Status  int
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("server refused (%d %s): %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap is the sentinel of e.Code, if any.
func (e *RemoteError) Unwrap() error { return sentinelOf(e.Code) }

// readAnswer decodes a 200 answer into v, or returns the RemoteError of
// any other.
func readAnswer(resp *http.Response, v any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%.200q", body)
		}
		return &RemoteError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("answer: %v (is %s a standby server?)", err, resp.Request.URL.Host)
	}
	return nil
}
