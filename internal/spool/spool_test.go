package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

const testMachine = "00112233-4455-6677-8899-aabbccddeeff"

func rawID(tb testing.TB, id string) [16]byte {
	tb.Helper()
	_, raw, err := parseMachineID(id)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// mustSegment builds a sealed segment of machine id continuing from prev
// with n writes (n may be 0), and returns it and the position after it.
func mustSegment(tb testing.TB, id string, epoch uint64, prev journal.Pos, n int, salt byte) ([]byte, journal.Pos) {
	tb.Helper()
	var buf bytes.Buffer
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: rawID(tb, id), Epoch: epoch, FirstSeq: prev.Seq + 1, PrevChain: prev.Chain, Created: 1})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		rec := journal.Record{Kind: journal.KindWrite, Offset: uint64(i) * 512, Length: 512, Data: bytes.Repeat([]byte{salt + byte(i)}, 512)}
		if err := w.Append(&rec); err != nil {
			tb.Fatal(err)
		}
	}
	tr, err := w.Seal(2)
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes(), tr.Pos()
}

func mustOpen(tb testing.TB, dir string, quota int64) *Spool {
	tb.Helper()
	s, err := Open(dir, Options{Quota: quota})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mustCheck(tb, s) })
	return s
}

// mustOpenUnchecked is mustOpen for a spool that a test makes stale.
func mustOpenUnchecked(tb testing.TB, dir string, quota int64) *Spool {
	tb.Helper()
	s, err := Open(dir, Options{Quota: quota})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustPut(tb testing.TB, s *Spool, id string, seg []byte, want journal.Pos) {
	tb.Helper()
	got, err := s.Put(context.Background(), id, seg)
	if err != nil {
		tb.Fatal(err)
	}
	if got != want {
		tb.Fatalf("put returned %s, want %s", got, want)
	}
}

// mustCheck verifies at teardown that the in-memory state matches what a
// fresh Open of the same directory rebuilds.
func mustCheck(tb testing.TB, s *Spool) {
	tb.Helper()
	again, err := Open(s.dir, Options{Quota: s.quota})
	if err != nil {
		tb.Fatalf("reopen: %v", err)
	}
	if got, want := again.Stats(), s.Stats(); !reflect.DeepEqual(got, want) {
		tb.Fatalf("reopen rebuilt %+v, spool had %+v", got, want)
	}
	if got, want := again.used, s.used; got != want {
		tb.Fatalf("reopen rebuilt %d bytes used, spool had %d", got, want)
	}
}

func TestPutNextRelease(t *testing.T) {
	s := mustOpen(t, t.TempDir(), 1<<20)
	var pos journal.Pos
	var segs [][]byte
	for i := range 3 {
		seg, next := mustSegment(t, testMachine, 1, pos, 2, byte(i))
		mustPut(t, s, testMachine, seg, next)
		segs, pos = append(segs, seg), next
	}

	var after uint64
	for i := range 3 {
		ref, ok := s.Next(testMachine, after)
		if !ok {
			t.Fatalf("next after %d: none", after)
		}
		if ref.FirstSeq != after+1 || ref.LastSeq != after+2 || ref.Epoch != 1 || ref.Size != int64(len(segs[i])) {
			t.Fatalf("next after %d: %+v", after, ref)
		}
		b, err := s.ReadSegment(ref)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, segs[i]) {
			t.Fatalf("segment %d: bytes differ", i)
		}
		after = ref.LastSeq
	}
	if ref, ok := s.Next(testMachine, after); ok {
		t.Fatalf("next after the tail: %+v", ref)
	}

	if err := s.Release(context.Background(), testMachine, 3); err != nil { // ends inside the second segment
		t.Fatal(err)
	}
	st := s.Stats()[testMachine]
	if st.Segments != 2 || st.Released.Seq != 2 || st.Tail != pos || st.Bytes != int64(len(segs[1])+len(segs[2])) {
		t.Fatalf("after release: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(s.dir, testMachine, segName(1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released segment still on disk: %v", err)
	}
	if ref, _ := s.Next(testMachine, 0); ref.FirstSeq != 3 {
		t.Fatalf("next after release: %+v", ref)
	}
	if err := s.Release(context.Background(), testMachine, pos.Seq); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()[testMachine]
	if st.Segments != 0 || st.Bytes != 0 || st.Released != pos || st.Tail != pos {
		t.Fatalf("after full release: %+v", st)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Fatalf("used %d after full release", used)
	}
}

func TestContinuity(t *testing.T) {
	s := mustOpen(t, t.TempDir(), 1<<20)
	seg1, p1 := mustSegment(t, testMachine, 1, journal.Pos{}, 2, 0)
	seg2, p2 := mustSegment(t, testMachine, 1, p1, 2, 1)
	seg3, p3 := mustSegment(t, testMachine, 1, p2, 2, 2)
	mustPut(t, s, testMachine, seg1, p1)
	mustPut(t, s, testMachine, seg2, p2)

	t.Run("gap", func(t *testing.T) {
		seg4, _ := mustSegment(t, testMachine, 1, p3, 1, 3)
		_, err := s.Put(context.Background(), testMachine, seg4)
		var pm *journal.PosMismatchError
		if !errors.As(err, &pm) || !pm.Gap() || pm.Want != p2 || pm.Got != p3 {
			t.Fatalf("got %v, want a gap from %s to %s", err, p2, p3)
		}
	})
	t.Run("fork", func(t *testing.T) {
		fork, _ := mustSegment(t, testMachine, 1, journal.Pos{Seq: p2.Seq, Chain: p2.Chain ^ 1}, 1, 3)
		_, err := s.Put(context.Background(), testMachine, fork)
		var pm *journal.PosMismatchError
		if !errors.As(err, &pm) || !pm.Fork() {
			t.Fatalf("got %v, want a fork", err)
		}
	})
	t.Run("fork of a spooled segment", func(t *testing.T) {
		other, _ := mustSegment(t, testMachine, 1, p1, 2, 9) // same seqs as seg2, other data
		_, err := s.Put(context.Background(), testMachine, other)
		var pm *journal.PosMismatchError
		if !errors.As(err, &pm) || !pm.Fork() || pm.Want != p2 {
			t.Fatalf("got %v, want a fork at %s", err, p2)
		}
	})
	t.Run("overlap", func(t *testing.T) {
		over, _ := mustSegment(t, testMachine, 1, p1, 3, 1) // seq 3..5, straddles the tail
		_, err := s.Put(context.Background(), testMachine, over)
		var pm *journal.PosMismatchError
		if !errors.As(err, &pm) || pm.Gap() || pm.Fork() {
			t.Fatalf("got %v, want an overlap", err)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		used, _ := s.Usage()
		mustPut(t, s, testMachine, seg1, p1)
		mustPut(t, s, testMachine, seg2, p2)
		if after, _ := s.Usage(); after != used {
			t.Fatalf("a duplicate changed usage from %d to %d", used, after)
		}
	})
	t.Run("duplicate after release", func(t *testing.T) {
		if err := s.Release(context.Background(), testMachine, p2.Seq); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, testMachine, seg1, p1)
		mustPut(t, s, testMachine, seg2, p2)
		if st := s.Stats()[testMachine]; st.Segments != 0 {
			t.Fatalf("a released duplicate was spooled again: %+v", st)
		}
		// The next Put must still continue from the released position.
		seg4, _ := mustSegment(t, testMachine, 1, p3, 1, 3)
		var pm *journal.PosMismatchError
		if _, err := s.Put(context.Background(), testMachine, seg4); !errors.As(err, &pm) || pm.Want != p2 {
			t.Fatalf("got %v, want a gap from the released position", err)
		}
		mustPut(t, s, testMachine, seg3, p3)
	})
	t.Run("empty segment", func(t *testing.T) {
		empty, _ := mustSegment(t, testMachine, 1, p3, 0, 0)
		mustPut(t, s, testMachine, empty, p3)
		if st := s.Stats()[testMachine]; st.Segments != 1 {
			t.Fatalf("empty segment spooled: %+v", st)
		}
	})
}

func TestPutRejectsInvalid(t *testing.T) {
	s := mustOpen(t, t.TempDir(), 1<<20)
	seg, _ := mustSegment(t, testMachine, 1, journal.Pos{}, 2, 0)

	unsealed := seg[:len(seg)-journal.TrailerSize]
	if _, err := s.Put(context.Background(), testMachine, unsealed); !errors.Is(err, journal.ErrNotSealed) {
		t.Fatalf("unsealed: got %v", err)
	}
	flipped := bytes.Clone(seg)
	flipped[journal.HeaderSize+journal.RecordHeaderSize+7] ^= 0xff
	if _, err := s.Put(context.Background(), testMachine, flipped); !errors.Is(err, journal.ErrChecksum) {
		t.Fatalf("flipped bit: got %v", err)
	}
	other := "ffffffff-4455-6677-8899-aabbccddeeff"
	if _, err := s.Put(context.Background(), other, seg); !errors.Is(err, ErrMachineID) {
		t.Fatalf("wrong machine: got %v", err)
	}
	if _, err := s.Put(context.Background(), "../../etc", seg); !errors.Is(err, ErrMachineID) {
		t.Fatalf("bad machine id: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, testMachine, seg); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v", err)
	}
	if st := s.Stats(); len(st) != 0 {
		t.Fatalf("rejected puts left state: %+v", st)
	}
	entries, _ := os.ReadDir(filepath.Join(s.dir, testMachine))
	if len(entries) != 0 {
		t.Fatalf("rejected puts left files: %v", entries)
	}
}

func TestQuota(t *testing.T) {
	seg1, p1 := mustSegment(t, testMachine, 1, journal.Pos{}, 2, 0)
	seg2, p2 := mustSegment(t, testMachine, 1, p1, 2, 1)
	s := mustOpen(t, t.TempDir(), int64(len(seg1)+len(seg2)/2))
	mustPut(t, s, testMachine, seg1, p1)

	_, err := s.Put(context.Background(), testMachine, seg2)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("over quota: got %v", err)
	}
	if ref, ok := s.Next(testMachine, p1.Seq); ok {
		t.Fatalf("refused segment is spooled: %+v", ref)
	}
	if _, err := os.Stat(filepath.Join(s.dir, testMachine, segName(p1.Seq+1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused segment written: %v", err)
	}
	// A duplicate needs no room.
	mustPut(t, s, testMachine, seg1, p1)

	if err := s.Release(context.Background(), testMachine, p1.Seq); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, testMachine, seg2, p2)
	if used, quota := s.Usage(); used != int64(len(seg2)) || quota != int64(len(seg1)+len(seg2)/2) {
		t.Fatalf("usage %d of %d", used, quota)
	}
}

func TestFencing(t *testing.T) {
	s := mustOpen(t, t.TempDir(), 1<<20)
	seg1, p1 := mustSegment(t, testMachine, 2, journal.Pos{}, 1, 0)
	mustPut(t, s, testMachine, seg1, p1)

	old, _ := mustSegment(t, testMachine, 1, p1, 1, 1)
	if _, err := s.Put(context.Background(), testMachine, old); !errors.Is(err, ErrFenced) {
		t.Fatalf("older epoch: got %v", err)
	}
	seg2, p2 := mustSegment(t, testMachine, 3, p1, 1, 1)
	mustPut(t, s, testMachine, seg2, p2)
	if st := s.Stats()[testMachine]; st.Epoch != 3 {
		t.Fatalf("epoch %d, want 3", st.Epoch)
	}

	// The fence survives releasing everything and reopening.
	if err := s.Release(context.Background(), testMachine, p2.Seq); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, s.dir, 1<<20)
	old2, _ := mustSegment(t, testMachine, 2, p2, 1, 2)
	if _, err := s2.Put(context.Background(), testMachine, old2); !errors.Is(err, ErrFenced) {
		t.Fatalf("older epoch after reopen: got %v", err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenUnchecked(t, dir, 1<<20) // stale once s2 puts
	second := "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	var pos, pos2 journal.Pos
	for i := range 4 {
		seg, next := mustSegment(t, testMachine, 1, pos, 1+i, byte(i))
		mustPut(t, s, testMachine, seg, next)
		pos = next
		seg2, next2 := mustSegment(t, second, 1, pos2, 1, byte(i))
		mustPut(t, s, second, seg2, next2)
		pos2 = next2
	}
	if err := s.Release(context.Background(), testMachine, 3); err != nil {
		t.Fatal(err)
	}
	// A crash during a put leaves a temporary file.
	tmp := filepath.Join(dir, testMachine, "."+segName(pos.Seq+1)+"-123"+tmpExt)
	if err := os.WriteFile(tmp, []byte("half a segment"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := mustOpen(t, dir, 1<<20)
	if !reflect.DeepEqual(s2.Stats(), s.Stats()) {
		t.Fatalf("reopen rebuilt %+v, want %+v", s2.Stats(), s.Stats())
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file survived Open: %v", err)
	}
	// The reopened spool carries on where the first one stopped.
	seg, next := mustSegment(t, testMachine, 1, pos, 1, 9)
	mustPut(t, s2, testMachine, seg, next)
}

func TestReopenFinishesRelease(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenUnchecked(t, dir, 1<<20) // the test edits the state file behind its back
	seg1, p1 := mustSegment(t, testMachine, 1, journal.Pos{}, 1, 0)
	seg2, p2 := mustSegment(t, testMachine, 1, p1, 1, 1)
	mustPut(t, s, testMachine, seg1, p1)
	mustPut(t, s, testMachine, seg2, p2)
	// A crash after the state file was written and before the removal.
	if err := writeState(filepath.Join(dir, testMachine), state{Released: p1, Epoch: 1}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, dir, 1<<20)
	st := s2.Stats()[testMachine]
	if st.Segments != 1 || st.Released != p1 || st.Tail != p2 {
		t.Fatalf("after reopen: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, testMachine, segName(1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released segment survived Open: %v", err)
	}
}

func TestOpenDamaged(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(path string, seg []byte) error
		wantErr error
	}{
		{"flipped bit", func(path string, seg []byte) error {
			b := bytes.Clone(seg)
			b[journal.HeaderSize+journal.RecordHeaderSize+3] ^= 1
			return os.WriteFile(path, b, 0o600)
		}, journal.ErrChecksum},
		{"truncated", func(path string, seg []byte) error {
			return os.WriteFile(path, seg[:len(seg)-10], 0o600)
		}, journal.ErrCorrupt},
		{"missing", func(path string, seg []byte) error {
			return os.Remove(path) // the chain now has a hole
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpenUnchecked(t, dir, 1<<20)
			var pos journal.Pos
			var segs [][]byte
			for i := range 3 {
				seg, next := mustSegment(t, testMachine, 1, pos, 1, byte(i))
				mustPut(t, s, testMachine, seg, next)
				segs, pos = append(segs, seg), next
			}
			path := filepath.Join(dir, testMachine, segName(2))
			if err := tc.damage(path, segs[1]); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, Options{Quota: 1 << 20})
			t.Log(err)
			if !errors.Is(err, ErrDamaged) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v wrapping %v", err, ErrDamaged, tc.wantErr)
			}
			if !strings.Contains(err.Error(), testMachine) || !strings.Contains(err.Error(), "hint:") {
				t.Fatalf("error names neither the machine nor a remedy: %v", err)
			}
			if tc.name != "missing" && !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name %s: %v", path, err)
			}
		})
	}
}

func TestOpenNeedsQuota(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Fatal("open without a quota succeeded")
	}
}

func TestConcurrentMachines(t *testing.T) {
	const machines, segsPer = 6, 20
	s := mustOpen(t, t.TempDir(), 1<<30)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, machines*2)
	for i := range machines {
		id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", i+1)
		var segs [][]byte
		var pos journal.Pos
		for j := range segsPer {
			seg, next := mustSegment(t, id, 1, pos, 1+j%3, byte(j))
			segs, pos = append(segs, seg), next
		}
		wg.Add(2)
		go func() { // the receiver
			defer wg.Done()
			for _, seg := range segs {
				if _, err := s.Put(ctx, id, seg); err != nil {
					errs <- err
					return
				}
				_ = s.Stats()
			}
		}()
		go func() { // the forwarder
			defer wg.Done()
			var after uint64
			for after < pos.Seq {
				ref, ok := s.Next(id, after)
				if !ok {
					runtime.Gosched() // the receiver has not put it yet
					continue
				}
				if _, err := s.ReadSegment(ref); err != nil {
					errs <- err
					return
				}
				if err := s.Release(ctx, id, ref.LastSeq); err != nil {
					errs <- err
					return
				}
				after = ref.LastSeq
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Fatalf("used %d after everything was released", used)
	}
	if st := s.Stats(); len(st) != machines {
		t.Fatalf("stats for %d machines, want %d", len(st), machines)
	}
}
