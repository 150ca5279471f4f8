package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/api"
)

// Every user operation of the API has a CLI command.
func TestCLICoversTheUserAPI(t *testing.T) {
	covered := map[string]string{
		"POST /v1/machines/{name}/protect":          "machines protect", // follows the job with --wait
		"GET /v1/jobs/{id}":                         "jobs show",        // --wait with a progress bar
		"GET /v1/openapi.json":                      "(a document, not an operation)",
		"POST /v1/machines/{name}/test-failover":    "machines test-failover", // follows the job with --wait
		"POST /v1/machines/{name}/test-cleanup":     "machines test-cleanup",
		"POST /v1/machines/{name}/failover":         "machines failover", // follows the job with --wait
		"POST /v1/machines/{name}/commit":           "machines commit",
		"POST /v1/machines/{name}/planned-failover": "machines planned-failover",
		"POST /v1/machines/{name}/reprotect":        "machines reprotect",
		"POST /v1/machines/{name}/failback":         "machines failback",
		"PUT /v1/plans/{name}":                      "plan apply", // reads YAML, validates it first
		"GET /v1/plans/{name}":                      "plan get",   // -o yaml too
		"POST /v1/plans/{name}/run":                 "plan run",
		"GET /v1/plans/{name}/runs":                 "plan runs",
		"GET /v1/plans/{name}/points":               "plan points",
		"GET /v1/plans/{name}/runs/{run}":           "plan report",
		"POST /v1/plans/{name}/runs/{run}/continue": "plan continue",
		"POST /v1/plans/{name}/runs/{run}/abort":    "plan abort",
		"POST /v1/plans/{name}/runs/{run}/retry":    "plan retry",
		"POST /v1/plans/{name}/runs/{run}/skip":     "plan skip",
	}
	param := regexp.MustCompile(`\{[a-z]+\}`)
	for _, c := range apiCommands() {
		args := make([]string, c.nargs)
		for i := range args {
			args[i] = "X"
		}
		path, _, _ := strings.Cut(c.path(args), "?")
		for _, e := range api.Routes() {
			if e.Method == c.method && param.ReplaceAllString(e.Path, "X") == path {
				covered[e.Method+" "+e.Path] = c.name
			}
		}
	}
	for _, e := range api.Routes() {
		switch e.Auth {
		case "viewer", "operator", "admin":
		default:
			continue // components and joiners are not users
		}
		if covered[e.Method+" "+e.Path] == "" {
			t.Errorf("no CLI command for %s %s", e.Method, e.Path)
		}
	}
}
