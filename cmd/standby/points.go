package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/certs"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/target"
)

// targetStatusAddr is --status, or the status address of --config.
func targetStatusAddr(status, config string) (string, error) {
	if status != "" {
		return status, nil
	}
	if config == "" {
		return "", usagef("say where the master target's status listener is: --status HOST:PORT or --config FILE")
	}
	cfg, err := target.LoadConfig(config)
	if err != nil {
		return "", err
	}
	if cfg.Status == "" {
		return "", fmt.Errorf("%s sets no status listener; add status: 127.0.0.1:9831", config)
	}
	return cfg.Status, nil
}

func httpGet(ctx context.Context, u string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, nil, errors.New(e.Error)
		}
		return nil, nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return b, resp.Header, nil
}

func newTargetPointsCommand() command {
	return command{
		name:  "target points",
		short: "list a machine's recovery points at a master target",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "target points", "[--status HOST:PORT | --config FILE] [-o json] MACHINE")
			status := fs.String("status", "", "the master target's status listener")
			config := fs.String("config", "", "the master target's configuration file (for its status listener)")
			out := outputFlag(fs)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if fs.NArg() != 1 {
				return usagef("target points takes one MACHINE (name or id)")
			}
			addr, err := targetStatusAddr(*status, *config)
			if err != nil {
				return err
			}
			b, _, err := httpGet(ctx, "http://"+addr+"/machines/"+url.PathEscape(fs.Arg(0))+"/points")
			if err != nil {
				return err
			}
			var points []replica.Point
			if err := json.Unmarshal(b, &points); err != nil {
				return fmt.Errorf("points from %s: %w", addr, err)
			}
			if *out == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if points == nil {
					points = []replica.Point{}
				}
				return enc.Encode(points)
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSEQ\tTIME (UTC)\tKIND\tLABEL\tTAGS")
			for _, p := range points {
				kind := "crash"
				if p.AppConsistent {
					kind = "app"
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", p.ID, p.Seq, p.Time.UTC().Format("2006-01-02 15:04:05.000"), kind, p.Label, strings.Join(p.Tags, ","))
			}
			return tw.Flush()
		},
	}
}

// verifyReport is `standby verify --output json`.
type verifyReport struct {
	Machine string       `json:"machine"`
	Point   string       `json:"point"`
	Equal   bool         `json:"equal"`
	Disks   []verifyDisk `json:"disks"`
}

type verifyDisk struct {
	Index        int              `json:"index"`
	Source       string           `json:"source"`
	Bytes        int64            `json:"bytes"`
	Equal        bool             `json:"equal"`
	DifferBytes  int64            `json:"differing_bytes"`
	DifferRanges []blockmap.Range `json:"differing_ranges,omitempty"`
}

func newVerifyCommand() command {
	return command{
		name:  "verify",
		short: "prove that a replica at a recovery point equals the source disks",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "verify", "[--status HOST:PORT | --config FILE] --machine M [--point ID|latest] --source PATH... [-o json]")
			status := fs.String("status", "", "the master target's status listener")
			config := fs.String("config", "", "the master target's configuration file")
			machine := fs.String("machine", "", "machine name or id")
			point := fs.String("point", "latest", "recovery point id, or latest")
			var sources stringList
			fs.Var(&sources, "source", "the source disk (image or device) at the same bookmark, in disk order (repeatable)")
			out := outputFlag(fs)
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if *machine == "" || len(sources) == 0 || fs.NArg() > 0 {
				return usagef("verify needs --machine and at least one --source")
			}
			addr, err := targetStatusAddr(*status, *config)
			if err != nil {
				return err
			}
			rep := verifyReport{Machine: *machine, Point: *point, Equal: true}
			for i, src := range sources {
				d, err := verifyDiskAt(ctx, addr, *machine, *point, i, src)
				if err != nil {
					return err
				}
				rep.Equal = rep.Equal && d.Equal
				rep.Disks = append(rep.Disks, d)
			}
			if *out == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				enc.Encode(rep)
			} else {
				for _, d := range rep.Disks {
					verdict := "equal"
					if !d.Equal {
						verdict = fmt.Sprintf("DIFFERS in %d bytes (%d ranges, first %v)", d.DifferBytes, len(d.DifferRanges), d.DifferRanges[0])
					}
					fmt.Fprintf(e.stdout, "disk %d (%s, %d bytes): %s\n", d.Index, d.Source, d.Bytes, verdict)
				}
			}
			if !rep.Equal {
				return fmt.Errorf("the replica of %s at point %s differs from the source", *machine, *point)
			}
			return nil
		},
	}
}

func verifyDiskAt(ctx context.Context, addr, machine, point string, disk int, src string) (verifyDisk, error) {
	d := verifyDisk{Index: disk, Source: src}
	u := fmt.Sprintf("http://%s/machines/%s/points/%s/blockmap?disk=%d", addr, url.PathEscape(machine), url.PathEscape(point), disk)
	b, _, err := httpGet(ctx, u)
	if err != nil {
		return d, fmt.Errorf("replica disk %d: %w", disk, err)
	}
	theirs, err := blockmap.DecodeMap(b)
	if err != nil {
		return d, fmt.Errorf("replica disk %d: %w", disk, err)
	}
	f, err := os.Open(src)
	if err != nil {
		return d, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return d, err
	}
	ours, err := blockmap.Hasher{BlockSize: theirs.BlockSize}.Hash(ctx, f, size, nil)
	if err != nil {
		return d, fmt.Errorf("hash %s: %w", src, err)
	}
	rs, err := blockmap.Diff(ours, theirs)
	if err != nil {
		return d, err
	}
	d.Bytes, d.Equal, d.DifferRanges = size, len(rs) == 0 && size == theirs.Size, rs
	for _, r := range rs {
		d.DifferBytes += r.Len
	}
	return d, nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func newCertsCommand() command {
	return command{
		name:  "certs create",
		short: "create a CA and certificates for the roles (mutual TLS), as PEM files",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "certs create", "--dir DIR NAME...")
			dir := fs.String("dir", "", "directory for ca.crt, ca.key and NAME.crt/NAME.key")
			validity := fs.Duration("validity", 365*24*time.Hour, "validity of the certificates")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if *dir == "" || fs.NArg() == 0 {
				return usagef("certs create needs --dir and at least one NAME (e.g. agent process target)")
			}
			files, err := certs.Create(*dir, fs.Args(), *validity)
			if err != nil {
				return err
			}
			for _, n := range fs.Args() {
				fmt.Fprintf(e.stdout, "%s: cert %s key %s ca %s\n", n, files[n].Cert, files[n].Key, files[n].CA)
			}
			return nil
		},
	}
}
