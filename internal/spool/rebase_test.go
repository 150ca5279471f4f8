package spool

import (
	"context"
	"errors"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

func TestDiscardAndRebase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mustOpen(t, dir, 1<<30)
	seg1, p1 := mustSegment(t, testMachine, 1, journal.Pos{}, 3, 1)
	mustPut(t, s, testMachine, seg1, p1)
	if err := s.Rebase(ctx, testMachine, journal.Pos{Seq: 100, Chain: 7}, 1); err == nil {
		t.Fatal("rebase with a segment spooled: got nil error")
	}
	if err := s.Discard(ctx, testMachine); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats()[testMachine].Segments; got != 0 {
		t.Fatalf("after discard: %d segments spooled, want 0", got)
	}
	// Sequence numbers may go backwards across a rebase.
	base := journal.Pos{Seq: 2, Chain: 42}
	if err := s.Rebase(ctx, testMachine, base, 2); err != nil {
		t.Fatal(err)
	}
	seg2, p2 := mustSegment(t, testMachine, 2, base, 2, 2)
	mustPut(t, s, testMachine, seg2, p2)
	// The rebase survives a restart, and an older epoch is fenced.
	s2 := mustOpen(t, dir, 1<<30)
	if got := s2.Stats()[testMachine]; got.Released != base || got.Tail != p2 || got.Epoch != 2 {
		t.Fatalf("after reopen: %+v, want released %v tail %v epoch 2", got, base, p2)
	}
	if err := s2.Rebase(ctx, testMachine, base, 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("rebase with an older epoch: %v", err)
	}
}
