package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/standby-dr/standby/internal/api/client"
)

// apiFlags are the connection flags of every command that calls the
// configuration server: --server, --token and --ca, defaulting to
// $STANDBY_SERVER, $STANDBY_TOKEN and $STANDBY_CA.
type apiFlags struct {
	server, token, ca *string
	output            *string
}

func addAPIFlags(fs *flag.FlagSet) *apiFlags {
	a := addConnectionFlags(fs)
	a.output = outputFlag(fs)
	return a
}

// addConnectionFlags adds the connection flags alone, for a command with
// output formats of its own (plan get -o yaml).
func addConnectionFlags(fs *flag.FlagSet) *apiFlags {
	return &apiFlags{
		server: fs.String("server", os.Getenv("STANDBY_SERVER"), "the configuration server's URL, https://HOST:PORT ($STANDBY_SERVER)"),
		token:  fs.String("token", os.Getenv("STANDBY_TOKEN"), "your API token ($STANDBY_TOKEN)"),
		ca:     fs.String("ca", os.Getenv("STANDBY_CA"), "the server's CA certificate, ca.crt in its data directory ($STANDBY_CA)"),
	}
}

// client checks the flags (--output too, when the command has the
// common one) and makes the API client.
func (a *apiFlags) client() (*client.Client, error) {
	if a.output != nil {
		if err := checkOutput(*a.output); err != nil {
			return nil, err
		}
	}
	if *a.server == "" {
		return nil, usagef("say which configuration server: --server https://HOST:PORT or STANDBY_SERVER")
	}
	if *a.token == "" {
		return nil, usagef("say who you are: --token TOKEN or STANDBY_TOKEN (the first admin's is in the server's data directory, admin.token)")
	}
	return client.New(client.Options{Server: *a.server, Token: *a.token, CAFile: *a.ca})
}

// apiCommand is the one shape of the commands that make one API call:
// flags, positional arguments, the call, then the answer printed as
// JSON (--output json, the API's own document) or as text.
type apiCommand struct {
	name, short, usage string
	nargs              int // positional arguments wanted
	flags              func(fs *flag.FlagSet) func(args []string) (query url.Values, body any, err error)
	method             string
	path               func(args []string) string
	text               func(w io.Writer, raw json.RawMessage) error
}

func (c apiCommand) command() command {
	return command{name: c.name, short: c.short, run: func(ctx context.Context, e *env, args []string) error {
		fs := newFlags(e, c.name, c.usage)
		af := addAPIFlags(fs)
		var extra func([]string) (url.Values, any, error)
		if c.flags != nil {
			extra = c.flags(fs)
		}
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != c.nargs {
			return usagef("usage: standby %s %s", c.name, c.usage)
		}
		args = pos
		cl, err := af.client()
		if err != nil {
			return err
		}
		var q url.Values
		var body any
		if extra != nil {
			if q, body, err = extra(args); err != nil {
				return err
			}
		}
		path := c.path(args)
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var raw json.RawMessage
		if err := cl.Do(ctx, c.method, path, body, &raw); err != nil {
			return err
		}
		if *af.output == "json" || c.text == nil {
			return printJSON(e.stdout, raw)
		}
		return c.text(e.stdout, raw)
	}}
}

func esc(s string) string { return url.PathEscape(s) }

func fixed(p string) func([]string) string { return func([]string) string { return p } }

// table prints rows under a header, aligned.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ReplaceAll(header, " ", "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseInterspersed parses flags wherever they are among the positional
// arguments (`machines protect web01 --group web`), which flag.Parse
// alone does not; it returns the positional arguments. "--" ends the
// flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// printJSON prints an API answer indented (the API sends it compact); an
// empty answer (204) prints as {}.
func printJSON(w io.Writer, raw json.RawMessage) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
