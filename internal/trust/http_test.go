package trust

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// TestJoinEndpointErrors posts bad requests to POST /v1/join and checks
// each answer is a JSON error with a fitting status, never a 500.
func TestJoinEndpointErrors(t *testing.T) {
	ts := mustServer(t)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: pinnedConfig(ts.CA.Pin())}}
	tok := ts.token(t, control.RoleAgent, time.Now(), time.Hour)
	_, csr, _ := newKeyAndCSR([]string{"web01"})
	good, _ := json.Marshal(JoinRequest{Token: tok, Role: control.RoleAgent, Name: "web01", CSR: csr})
	again, _ := json.Marshal(JoinRequest{Token: tok, Role: control.RoleAgent, Name: "web02", CSR: csr})
	for _, tc := range []struct {
		name, method, body string
		status             int
		code               string
	}{
		{"not JSON", "POST", "{", 400, "malformed"},
		{"unknown field", "POST", `{"token":"x","admin":true}`, 400, "malformed"},
		{"two values", "POST", string(good) + string(good), 400, "malformed"},
		{"too big", "POST", `{"name":"` + strings.Repeat("a", maxBody) + `"}`, 400, "malformed"},
		{"garbage token", "POST", `{"token":"x","role":"agent","name":"a"}`, 400, "malformed"},
		{"GET", "GET", "", 405, ""},
		{"good", "POST", string(good), 200, ""},
		{"name taken", "POST", string(good), 409, "exists"},
		{"reused", "POST", string(again), 409, "token_used"},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+JoinPath, strings.NewReader(tc.body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, resp.StatusCode, b, tc.status)
			continue
		}
		if tc.code == "" {
			continue
		}
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Code != tc.code || eb.Error == "" {
			t.Errorf("%s: body %s, want a JSON error with code %s", tc.name, b, tc.code)
		}
	}
}
