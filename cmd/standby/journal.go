package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// journalReport is `standby journal inspect --output json`: a documented
// contract (docs/cli-json.md).
type journalReport struct {
	Segments []segmentReport `json:"segments"`
	Totals   journalTotals   `json:"totals"`
	Records  []recordReport  `json:"records,omitempty"`
}

type segmentReport struct {
	Path      string `json:"path"`
	MachineID string `json:"machine_id"`
	Epoch     uint64 `json:"epoch"`
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	Records   uint64 `json:"records"`
	Size      int64  `json:"size"`
	Sealed    bool   `json:"sealed"`
	Chain     string `json:"chain"`
	// Status is "ok", "active" (no trailer yet) or the damage found.
	Status string `json:"status"`
}

type journalTotals struct {
	Segments     int    `json:"segments"`
	Records      uint64 `json:"records"`
	Writes       uint64 `json:"writes"`
	WriteBytes   uint64 `json:"write_bytes"`
	Zeroes       uint64 `json:"zeroes"`
	ZeroBytes    uint64 `json:"zero_bytes"`
	Trims        uint64 `json:"trims"`
	TrimBytes    uint64 `json:"trim_bytes"`
	ResyncWrites uint64 `json:"resync_records"` // writes and zeroes that carry resynchronised extents
	Bookmarks    uint64 `json:"bookmarks"`
	AppBookmarks uint64 `json:"app_consistent_bookmarks"`
	FirstSeq     uint64 `json:"first_seq"`
	LastSeq      uint64 `json:"last_seq"`
	Damaged      int    `json:"damaged_segments"`
}

type recordReport struct {
	Seq    uint64    `json:"seq"`
	Kind   string    `json:"kind"`
	Disk   uint16    `json:"disk"`
	Offset uint64    `json:"offset"`
	Length uint64    `json:"length"`
	Time   time.Time `json:"time"`
	Flags  []string  `json:"flags,omitempty"`
	Label  string    `json:"label,omitempty"`
}

func newJournalInspectCommand() command {
	return command{
		name:  "journal inspect",
		short: "list journal segments and what they captured",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "journal inspect", "[--records] [-o json] PATH...  (segment files, journal directories or agent state directories)")
			out := outputFlag(fs)
			records := fs.Bool("records", false, "list every record")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if fs.NArg() == 0 {
				return usagef("journal inspect needs a segment file or a journal directory")
			}
			rep, err := inspectJournal(fs.Args(), *records)
			if err != nil {
				return err
			}
			if *out == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printJournalReport(e.stdout, rep, 0)
			if rep.Totals.Damaged > 0 {
				return fmt.Errorf("%d damaged segment(s)", rep.Totals.Damaged)
			}
			return nil
		},
	}
}

// segmentPaths expands directories (an agent state directory or its
// journal/ directory) into their segment files.
func segmentPaths(args []string) ([]string, error) {
	var paths []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			paths = append(paths, a)
			continue
		}
		dir := a
		if _, err := os.Stat(filepath.Join(a, "journal")); err == nil {
			dir = filepath.Join(a, "journal")
		}
		m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
		if err != nil {
			return nil, err
		}
		sort.Strings(m)
		paths = append(paths, m...)
	}
	return paths, nil
}

func inspectJournal(args []string, withRecords bool) (*journalReport, error) {
	paths, err := segmentPaths(args)
	if err != nil {
		return nil, err
	}
	rep := &journalReport{Segments: []segmentReport{}}
	for _, p := range paths {
		sr, err := inspectSegment(p, &rep.Totals, func(r *journal.Record) {
			if withRecords {
				rep.Records = append(rep.Records, recordOf(r))
			}
		})
		if err != nil {
			return nil, err
		}
		rep.Segments = append(rep.Segments, sr)
	}
	rep.Totals.Segments = len(rep.Segments)
	return rep, nil
}

func inspectSegment(path string, t *journalTotals, each func(*journal.Record)) (segmentReport, error) {
	sr := segmentReport{Path: path, Status: "ok"}
	f, err := os.Open(path)
	if err != nil {
		return sr, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		sr.Size = st.Size()
	}
	rd, err := journal.NewReader(f)
	if err != nil {
		sr.Status = err.Error()
		t.Damaged++
		return sr, nil
	}
	h := rd.Header()
	sr.MachineID, sr.Epoch, sr.FirstSeq = uuidString(h.MachineID), h.Epoch, h.FirstSeq
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			sr.Sealed = true
			break
		}
		if errors.Is(err, journal.ErrNotSealed) {
			sr.Status = "active"
			break
		}
		if err != nil {
			sr.Status = err.Error()
			t.Damaged++
			break
		}
		t.Records++
		switch rec.Kind {
		case journal.KindWrite:
			t.Writes++
			t.WriteBytes += rec.Length
			if rec.Flags&journal.FlagResync != 0 {
				t.ResyncWrites++
			}
		case journal.KindZero:
			t.Zeroes++
			t.ZeroBytes += rec.Length
			if rec.Flags&journal.FlagResync != 0 {
				t.ResyncWrites++
			}
		case journal.KindTrim:
			t.Trims++
			t.TrimBytes += rec.Length
		case journal.KindBookmark:
			t.Bookmarks++
			if rec.Flags&journal.FlagAppConsistent != 0 {
				t.AppBookmarks++
			}
		}
		if t.FirstSeq == 0 {
			t.FirstSeq = rec.Seq
		}
		t.LastSeq = rec.Seq
		each(&rec)
	}
	sr.LastSeq, sr.Records, sr.Chain = rd.Pos().Seq, rd.Count(), fmt.Sprintf("%016x", rd.Pos().Chain)
	return sr, nil
}

// uuidString writes a machine id the way state.json and operators see it.
func uuidString(id [16]byte) string {
	h := hex.EncodeToString(id[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func recordOf(r *journal.Record) recordReport {
	rr := recordReport{Seq: r.Seq, Kind: r.Kind.String(), Disk: r.Disk, Offset: r.Offset, Length: r.Length, Time: time.Unix(0, r.Time).UTC()}
	if r.Flags&journal.FlagAppConsistent != 0 {
		rr.Flags = append(rr.Flags, "app-consistent")
	}
	if r.Flags&journal.FlagResync != 0 {
		rr.Flags = append(rr.Flags, "resync")
	}
	if r.Flags&journal.FlagNoHole != 0 {
		rr.Flags = append(rr.Flags, "no-hole")
	}
	if r.Kind == journal.KindBookmark {
		rr.Label = string(r.Data)
	}
	return rr
}

// printJournalReport prints the report; with maxSegments > 0 it shows only
// the first and last few segments.
func printJournalReport(w io.Writer, rep *journalReport, maxSegments int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tEPOCH\tFIRST\tLAST\tRECORDS\tSIZE\tSTATUS")
	for i, s := range rep.Segments {
		if n := len(rep.Segments); maxSegments > 0 && n > maxSegments && i >= maxSegments/2 && i < n-maxSegments/2 {
			if i == maxSegments/2 {
				fmt.Fprintf(tw, "... %d more\t\t\t\t\t\t\n", n-maxSegments/2*2)
			}
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", filepath.Base(s.Path), s.Epoch, s.FirstSeq, s.LastSeq, s.Records, humanBytes(uint64(s.Size)), s.Status)
	}
	tw.Flush()
	t := rep.Totals
	fmt.Fprintf(w, "\n%d segments, records %d..%d: %d writes (%s), %d zeroes (%s), %d trims (%s), %d bookmarks (%d app-consistent)",
		t.Segments, t.FirstSeq, t.LastSeq, t.Writes, humanBytes(t.WriteBytes), t.Zeroes, humanBytes(t.ZeroBytes), t.Trims, humanBytes(t.TrimBytes), t.Bookmarks, t.AppBookmarks)
	if t.ResyncWrites > 0 {
		fmt.Fprintf(w, ", %d resync records", t.ResyncWrites)
	}
	fmt.Fprintln(w)
	if len(rep.Records) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tKIND\tDISK\tOFFSET\tLENGTH\tTIME\tFLAGS")
		for _, r := range rep.Records {
			flags := strings.Join(r.Flags, ",")
			if r.Label != "" {
				flags = strings.TrimPrefix(flags+" label="+r.Label, " ")
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%s\n", r.Seq, r.Kind, r.Disk, r.Offset, r.Length, r.Time.Format(time.RFC3339Nano), flags)
		}
		tw.Flush()
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newJournalReplayCommand() command {
	return command{
		name:  "journal replay",
		short: "apply a journal to disk images (in disk order), e.g. to prove replay equality",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "journal replay", "[--upto SEQ] [-o json] JOURNAL-DIR IMAGE...")
			out := outputFlag(fs)
			upTo := fs.Uint64("upto", 0, "stop after this sequence number (a bookmark); 0: everything")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*out); err != nil {
				return err
			}
			if fs.NArg() < 2 {
				return usagef("journal replay needs a journal directory and one image per disk")
			}
			dirs, err := segmentPaths(fs.Args()[:1])
			if err != nil {
				return err
			}
			dir := fs.Arg(0)
			if len(dirs) > 0 {
				dir = filepath.Dir(dirs[0])
			}
			pos, err := replayInto(ctx, dir, fs.Args()[1:], *upTo)
			if err != nil {
				return err
			}
			if *out == "json" {
				return json.NewEncoder(e.stdout).Encode(map[string]any{"seq": pos.Seq, "chain": fmt.Sprintf("%016x", pos.Chain)})
			}
			fmt.Fprintf(e.stdout, "replayed through %s\n", pos)
			return nil
		},
	}
}

// replayInto applies the journal in dir to the image files.
func replayInto(ctx context.Context, dir string, images []string, upTo uint64) (journal.Pos, error) {
	var disks []nbd.Backend
	for _, p := range images {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return journal.Pos{}, err
		}
		defer f.Close()
		b, err := nbd.NewFileBackend(f)
		if err != nil {
			return journal.Pos{}, err
		}
		disks = append(disks, b)
	}
	return capture.Replay(ctx, dir, disks, capture.ReplayOptions{UpTo: upTo})
}

func newVersionCommand() command {
	return command{
		name:  "version",
		short: "print the version and the journal format window",
		run: func(ctx context.Context, e *env, args []string) error {
			fmt.Fprintf(e.stdout, "standby %s (journal format %d..%d)\n", version, journal.MinVersion, journal.MaxVersion)
			return nil
		},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
