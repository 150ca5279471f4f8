package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/spool"
	"github.com/standby-dr/standby/internal/wire"
)

// serveAgent runs one agent's data stream.
func (s *Server) serveAgent(c *wire.Conn) error {
	var op wire.Open
	if err := c.Expect(wire.TypeOpen, &op); err != nil {
		return err
	}
	id, err := wire.CanonicalMachineID(op.Machine)
	if err != nil {
		c.SendError(&wire.Error{Code: wire.CodeBadRequest, Message: "open: " + err.Error()})
		return err
	}
	op.Machine = id
	f := s.forwarder(op)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	opened, werr := s.opened(ctx, f)
	if werr != nil {
		c.SendError(werr)
		return werr
	}
	if err := c.SendJSON(wire.TypeOpened, opened); err != nil {
		return err
	}
	s.log.Info("agent connected", "machine", op.Machine, "name", op.Name, "durable", opened.Durable.Seq, "applied", opened.Applied.Seq)
	go s.heartbeat(ctx, c, f)

	c.SetIdleTimeout(30 * time.Second)
	var copying bool // the last rebase started copy gen
	var gen uint64
	forget := func() {} // the last rebase's tunnel offer
	defer func() { forget() }()
	rb := copyBufs.Get().(*[]byte) // the receive buffer; a Copy frame takes it along
	defer func() { copyBufs.Put(rb) }()
	for {
		t, p, err := c.RecvInto(*rb)
		if err != nil {
			return err
		}
		switch t {
		case wire.TypePing:
		case wire.TypeSegment:
			s.counters.mu.Lock()
			s.counters.agentBytes += uint64(len(p))
			s.counters.segments++
			s.counters.mu.Unlock()
			if err := s.backoffPut(ctx, op.Machine, p); err != nil {
				werr := s.putError(err, op.Machine)
				c.SendError(werr)
				return fmt.Errorf("spool segment: %w", err)
			}
			f.kick()
			if err := c.SendJSON(wire.TypeAck, s.ack(f, false)); err != nil {
				return err
			}
		case wire.TypeRebase:
			var r wire.Rebase
			if err := wire.Decode(t, p, &r); err != nil {
				return err
			}
			r.Tunnel = r.Tunnel && !s.o.NoTunnel // the agent asks; this server may not relay
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			rb, err := f.requestRebase(rctx, r)
			rcancel()
			copying, gen = rb.copy, rb.gen
			if err != nil {
				var we *wire.Error
				if !errors.As(err, &we) {
					we = &wire.Error{Code: wire.CodeInternal, Message: err.Error(), Transient: true}
				}
				c.SendError(we)
				return err
			}
			forget()
			var offer *wire.Tunnel
			offer, forget = s.offerTunnel(ctx, f, rb.tunnel)
			s.log.Info("rebased for resynchronisation", "machine", op.Machine, "seq", r.Pos.Seq, "copy", copying, "tunnel", offer != nil)
			a := s.ack(f, true)
			a.Copy = copying
			if copying && r.Tunnel {
				a.Tunnel = offer
			}
			if err := c.SendJSON(wire.TypeAck, a); err != nil {
				return err
			}
		case wire.TypeCopy, wire.TypeCopyEnd:
			var end *wire.CopyEnd
			if t == wire.TypeCopyEnd {
				end = new(wire.CopyEnd)
				if err := wire.Decode(t, p, end); err != nil {
					return err
				}
			} else {
				s.counters.mu.Lock()
				s.counters.agentBytes += uint64(len(p))
				s.counters.mu.Unlock()
			}
			if !copying {
				c.SendError(&wire.Error{Code: wire.CodeBadRequest, Message: "copy frame without a rebase the master target took as a copy"})
				return fmt.Errorf("%w: copy frame without a copy", wire.ErrProtocol)
			}
			var payload *[]byte
			if end == nil {
				payload = &p
				if cap(p) == cap(*rb) {
					rb = copyBufs.Get().(*[]byte) // p is *rb's array
				}
			}
			if err := f.queueCopy(ctx, gen, payload, end); err != nil {
				var we *wire.Error
				if !errors.As(err, &we) {
					we = &wire.Error{Code: wire.CodeUnavailable, Message: "copy: " + err.Error(), Transient: true}
				}
				c.SendError(we)
				return fmt.Errorf("forward copy: %w", err)
			}
			if end != nil {
				copying = false
				s.log.Info("copy durable at the master target", "machine", op.Machine, "bytes", end.Bytes, "frames", end.Frames)
				a := s.ack(f, false)
				a.Copied = true
				if err := c.SendJSON(wire.TypeAck, a); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: %s frame from an agent", wire.ErrProtocol, t)
		}
	}
}

// opened says where the agent should ship from: after the cache's tail,
// or, for a machine the cache never saw, the master target's frontier.
func (s *Server) opened(ctx context.Context, f *forwarder) (wire.Opened, *wire.Error) {
	deadline := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		known, broken, ch := f.known, f.broken, f.changed
		o := wire.Opened{Applied: f.applied, Consistent: f.consistent && broken == nil, Epoch: f.open.Epoch, Known: known}
		f.mu.Unlock()
		if broken != nil {
			if broken.Code == wire.CodeFenced {
				return o, broken
			}
			// The master target refused the stream (a gap, a fork): the
			// agent must resynchronise, and its drain call clears the
			// refusal. Refusing its Open instead would leave it unable
			// to start that resync.
			o.Durable, o.Consistent = o.Applied, false
			return o, nil
		}
		st, seen := s.spool.Stats()[f.id]
		if known {
			o.Durable = o.Applied
			switch {
			case seen && st.Tail.Seq >= o.Applied.Seq:
				o.Durable = st.Tail
			case seen && st.Segments == 0:
				// The master target is ahead of the cache (its state
				// file is older than the target's, or it was lost):
				// continue from the target.
				if err := s.spool.Rebase(ctx, f.id, o.Applied, o.Epoch); err != nil {
					return o, &wire.Error{Code: wire.CodeInternal, Message: err.Error(), Transient: true}
				}
			}
			return o, nil
		}
		select {
		case <-ch:
		case <-deadline:
			if seen {
				// The master target is out of reach: the cache says where
				// to continue, and the target's verdict on consistency
				// comes when it is back (a gap or fork makes the agent
				// resynchronise then).
				o.Durable, o.Consistent = st.Tail, true
				return o, nil
			}
			return o, &wire.Error{Code: wire.CodeUnavailable, Message: "the process server has not reached the master target yet", Transient: true}
		case <-ctx.Done():
			return o, &wire.Error{Code: wire.CodeUnavailable, Message: "process server stopping", Transient: true}
		}
	}
}

func (s *Server) ack(f *forwarder, rebased bool) wire.Ack {
	st := s.spool.Stats()[f.id]
	f.mu.Lock()
	defer f.mu.Unlock()
	return wire.Ack{Durable: st.Tail, Applied: f.applied, AppliedAt: f.appliedAt, AppliedRecordTime: f.recordTime,
		Consistent: f.consistent && f.broken == nil, Rebased: rebased, Points: f.points, Epoch: f.open.Epoch}
}

// heartbeat sends the agent an Ack whenever the master target's frontier
// moves and at least every second, and the target's refusal if it comes.
func (s *Server) heartbeat(ctx context.Context, c *wire.Conn, f *forwarder) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	f.mu.Lock()
	known := f.broken // the agent was told at Open and is resynchronising
	f.mu.Unlock()
	for {
		f.mu.Lock()
		ch, broken := f.changed, f.broken
		f.mu.Unlock()
		if broken != nil && broken != known {
			c.SendError(broken)
			c.Close()
			return
		}
		if c.SendJSON(wire.TypeAck, s.ack(f, false)) != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
			// coalesce bursts of acknowledgements
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		case <-tick.C:
		}
	}
}

func (s *Server) putError(err error, id string) *wire.Error {
	st := s.spool.Stats()[id]
	if we := wire.PosError(err, st.Tail); we != nil {
		return we
	}
	switch {
	case errors.Is(err, spool.ErrFenced):
		return &wire.Error{Code: wire.CodeFenced, Message: err.Error()}
	case errors.Is(err, journal.ErrCorrupt), errors.Is(err, spool.ErrMachineID):
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	return &wire.Error{Code: wire.CodeInternal, Message: err.Error(), Transient: true}
}

// serveControl answers an agent's control calls: drain here, tree requests
// from the master target.
func (s *Server) serveControl(c *wire.Conn) error {
	for {
		var call wire.Call
		if err := c.Expect(wire.TypeCall, &call); err != nil {
			return err
		}
		result, blob, err := s.call(call)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) {
				we = &wire.Error{Code: wire.CodeInternal, Message: err.Error(), Transient: wire.IsTransient(err)}
			}
			if c.SendError(we) != nil {
				return err
			}
			continue
		}
		if err := c.ReplyJSON(result, blob); err != nil {
			return err
		}
	}
}

func (s *Server) call(call wire.Call) (any, []byte, error) {
	// A comparison's first tree request hashes a whole disk at the target.
	ctx, cancel := context.WithTimeout(s.ctx, time.Hour)
	defer cancel()
	switch call.Method {
	case wire.MethodDrain:
		var a wire.DrainArgs
		if err := json.Unmarshal(call.Args, &a); err != nil {
			return nil, nil, &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
		}
		id, _ := wire.CanonicalMachineID(a.Machine)
		f, ok := s.lookup(id)
		if !ok {
			return nil, nil, &wire.Error{Code: wire.CodeBadRequest, Message: "drain: machine " + a.Machine + " has no stream here; open it first"}
		}
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer dcancel()
		pos, err := f.drain(dctx)
		return wire.DrainResult{Applied: pos}, nil, err
	case wire.MethodTree:
		// Passed through to the master target, as it is.
		r, err := s.treeRoute(ctx, call.Args)
		if err != nil {
			return nil, nil, err
		}
		tc, err := s.dialTarget(ctx, r, wire.StreamControl)
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				return nil, nil, we // the target's refusal, as it is
			}
			return nil, nil, &wire.Error{Code: wire.CodeUnavailable, Message: err.Error(), Transient: wire.IsTransient(err)}
		}
		defer tc.Close()
		var res json.RawMessage
		blob, err := tc.CallJSON(ctx, call.Method, call.Args, &res)
		return res, blob, err
	case wire.MethodStatus:
		return s.Status(), nil, nil
	}
	return nil, nil, &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("unknown method %q", call.Method)}
}
