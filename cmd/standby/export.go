package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/standby-dr/standby/internal/target"
)

// exportCommands are the commands of exports of recovery points at a
// master target (docs/exports.md): they call its status listener.
func exportCommands() []command {
	return []command{newTargetExportCommand(), newTargetExportsCommand(), newTargetUnexportCommand()}
}

// httpDo sends a JSON body (nil: none) and decodes a JSON answer into out
// (nil: ignored); an answer other than want is an error with the
// target's message.
func httpDo(ctx context.Context, method, u string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, u, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("answer of %s: %w", u, err)
		}
	}
	return nil
}

func newTargetExportCommand() command {
	return command{
		name:  "target export",
		short: "serve a recovery point of a machine over NBD (a writable overlay; the replica is untouched)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "target export", "[--status HOST:PORT | --config FILE] [--point latest|latest-app|ID|TIME] [--name NAME] [-o json] MACHINE")
			status := fs.String("status", "", "the master target's status listener")
			config := fs.String("config", "", "the master target's configuration file (for its status listener)")
			point := fs.String("point", "latest", "recovery point: latest, latest-app, an id, or a time (RFC 3339: the newest point at or before it)")
			name := fs.String("name", "", "the export's name (default: made from the machine and the point)")
			out := outputFlag(fs)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if fs.NArg() != 1 {
				return usagef("target export takes one MACHINE (name or id)")
			}
			addr, err := targetStatusAddr(*status, *config)
			if err != nil {
				return err
			}
			var x target.Export
			req := target.ExportRequest{Machine: fs.Arg(0), Point: *point, Name: *name}
			if err := httpDo(ctx, http.MethodPost, "http://"+addr+"/exports", req, http.StatusCreated, &x); err != nil {
				return err
			}
			if *out == "json" {
				return writeJSONOut(e.stdout, x)
			}
			fmt.Fprintf(e.stdout, "export %s: machine %s point %d (%s)\n", x.Name, exportMachineName(x), x.Point.ID, x.Point.Time.UTC().Format("2006-01-02 15:04:05.000"))
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DISK\tSIZE\tNBD EXPORT\tURI")
			for _, d := range x.Disks {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", d.Name, d.Size, d.Export, exportURI(d))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "writes go to an overlay; end it with: standby target unexport --status %s %s\n", addr, x.Name)
			return nil
		},
	}
}

func newTargetExportsCommand() command {
	return command{
		name:  "target exports",
		short: "list the exports of recovery points at a master target",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "target exports", "[--status HOST:PORT | --config FILE] [-o json]")
			status := fs.String("status", "", "the master target's status listener")
			config := fs.String("config", "", "the master target's configuration file (for its status listener)")
			out := outputFlag(fs)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if fs.NArg() != 0 {
				return usagef("target exports takes no arguments")
			}
			addr, err := targetStatusAddr(*status, *config)
			if err != nil {
				return err
			}
			xs := []target.Export{}
			if err := httpDo(ctx, http.MethodGet, "http://"+addr+"/exports", nil, http.StatusOK, &xs); err != nil {
				return err
			}
			if *out == "json" {
				return writeJSONOut(e.stdout, xs)
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMACHINE\tPOINT\tCREATED (UTC)\tDISK\tOVERLAY BYTES\tURI")
			for _, x := range xs {
				for _, d := range x.Disks {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\n", x.Name, exportMachineName(x), x.Point.ID,
						x.Created.UTC().Format("2006-01-02 15:04:05"), d.Name, d.OverlayBytes, exportURI(d))
				}
			}
			return tw.Flush()
		},
	}
}

func newTargetUnexportCommand() command {
	return command{
		name:  "target unexport",
		short: "stop serving an export: its connections close and its overlay is deleted",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "target unexport", "[--status HOST:PORT | --config FILE] NAME")
			status := fs.String("status", "", "the master target's status listener")
			config := fs.String("config", "", "the master target's configuration file (for its status listener)")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if fs.NArg() != 1 {
				return usagef("target unexport takes one export NAME (standby target exports lists them)")
			}
			addr, err := targetStatusAddr(*status, *config)
			if err != nil {
				return err
			}
			if err := httpDo(ctx, http.MethodDelete, "http://"+addr+"/exports/"+url.PathEscape(fs.Arg(0)), nil, http.StatusNoContent, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "unexported %s\n", fs.Arg(0))
			return nil
		},
	}
}

func exportMachineName(x target.Export) string {
	if x.MachineName != "" {
		return x.MachineName
	}
	return x.Machine
}

// exportURI is the TCP URI of a disk, else its unix socket URI.
func exportURI(d target.ExportDisk) string {
	if d.URI != "" {
		return d.URI
	}
	return d.UnixURI
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
