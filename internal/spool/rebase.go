package spool

import (
	"context"
	"fmt"

	"github.com/standby-dr/standby/internal/journal"
)

// Discard drops every spooled segment of machineID, durably, as if the
// master target had acknowledged them: the caller learnt that the target
// cannot take them (a gap or a fork) and the agent is resynchronising.
func (s *Spool) Discard(ctx context.Context, machineID string) error {
	st, ok := s.Stats()[machineID]
	if !ok || st.Segments == 0 {
		return nil
	}
	return s.Release(ctx, machineID, st.Tail.Seq)
}

// Rebase makes pos the machine's position: the next Put must continue from
// it, whatever came before (the agent is resynchronising: initial
// replication, or after a gap or fork, and the master target accepted the
// same rebase). It refuses while segments are spooled: they must be
// forwarded or discarded first. epoch becomes the accepted epoch if higher.
func (s *Spool) Rebase(ctx context.Context, machineID string, pos journal.Pos, epoch uint64) error {
	id, raw, err := parseMachineID(machineID)
	if err != nil {
		return err
	}
	m := s.machine(id, raw)
	m.wmu.Lock()
	defer m.wmu.Unlock()
	s.mu.Lock()
	n := len(m.segs)
	if epoch < m.epoch {
		s.mu.Unlock()
		return fmt.Errorf("spool rebase: machine %s: %w: epoch %d, spool has accepted epoch %d", id, ErrFenced, epoch, m.epoch)
	}
	epoch = max(epoch, m.epoch)
	s.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("spool rebase: machine %s still has %d segments spooled", id, n)
	}
	if err := s.ensureDir(m); err != nil {
		return err
	}
	if err := writeState(m.dir, state{Released: pos, Epoch: epoch}, ctx.Err); err != nil {
		return fmt.Errorf("spool rebase: machine %s: %w", id, err)
	}
	s.mu.Lock()
	m.released, m.epoch, m.seen = pos, epoch, true
	s.mu.Unlock()
	return nil
}
