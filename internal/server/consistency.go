package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
)

// consistencyLoop runs a barrier round for every recovery plan each
// interval (internal/api/consistency.go): the plan's machines bookmark
// together, labelled consistent-<plan>-<unix ms>. A plan some of whose
// machines are not protected in delta by their own agents (failed over,
// protected in reverse, resynchronizing) is skipped in that round. A
// round that fails (an agent slow to hold on a loaded host) is logged at
// info; failures in a row are warned about, as the plan then has no
// recent multi-machine point.
func (s *Server) consistencyLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failed := map[string]int{} // rounds failed in a row, by plan
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		plans, err := s.st.ListPlans(ctx)
		if err != nil {
			s.o.Log.Warn("consistency barriers: list plans", "err", err)
			continue
		}
		for _, p := range plans {
			err := s.consistencyRound(ctx, p)
			switch {
			case err == nil:
				delete(failed, p.Name)
			case ctx.Err() != nil:
			default:
				failed[p.Name]++
				log := s.o.Log.Info
				if failed[p.Name] >= barrierWarnAfter {
					log = s.o.Log.Warn
				}
				log("consistency barrier", "plan", p.Name, "failed_in_a_row", failed[p.Name], "err", err)
			}
		}
	}
}

// barrierWarnAfter is how many rounds of a plan in a row must fail before
// a warning.
const barrierWarnAfter = 2

// errNotReady: some machine of the plan cannot take part now.
var errNotReady = errors.New("not every machine is protected by its own agent")

// consistencyRound runs one round for plan p.
func (s *Server) consistencyRound(ctx context.Context, p control.Plan) error {
	var ids []string
	for _, name := range p.Machines() {
		m, err := s.st.MachineByName(ctx, name)
		if err != nil {
			return fmt.Errorf("machine %s: %w", name, err)
		}
		if m.State != control.StateProtected || m.Reverse != nil {
			return nil // skipped this round
		}
		ids = append(ids, m.ID)
	}
	label := fmt.Sprintf("%s%s-%d", api.ConsistentLabelPrefix, p.Name, s.o.Now().UnixMilli())
	start := time.Now()
	if _, err := s.api.Barrier(ctx, ids, label, 5*time.Second); err != nil {
		return err
	}
	s.o.Log.Debug("consistency barrier", "plan", p.Name, "label", label, "machines", len(ids), "took", time.Since(start))
	return nil
}
