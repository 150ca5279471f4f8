package capture

import "sync"

// inflight orders disk operations that overlap. Journal appends happen
// under the machine's lock, but the disk operations run after it is
// released, in parallel. An operation registered while the lock is held
// waits, before touching the disk, for every earlier registered operation
// whose range overlaps its own; so the disk applies overlapping writes in
// journal order and replaying the journal reproduces it. Most operations
// overlap nothing and never wait.
type inflight struct {
	mu   sync.Mutex
	ops  []*diskOp // registered and not ended, oldest first
	free []*diskOp
	idle *sync.Cond // signalled when ops becomes empty
}

type diskOp struct {
	disk     int
	off, end int64
	gen      uint64        // write generation of a change; 0 for a read
	done     chan struct{} // made when a later operation must wait for this one
	earlier  []chan struct{}
}

// begin registers [off, end) of disk. Call it with the machine's lock held,
// right after the journal append, so registration order is journal order.
func (t *inflight) begin(disk int, off, end int64, gen uint64) *diskOp {
	t.mu.Lock()
	defer t.mu.Unlock()
	var o *diskOp
	if n := len(t.free); n > 0 {
		o, t.free = t.free[n-1], t.free[:n-1]
	} else {
		o = new(diskOp)
	}
	o.disk, o.off, o.end, o.gen = disk, off, end, gen
	for _, p := range t.ops {
		if p.disk == disk && p.off < end && off < p.end {
			if p.done == nil {
				p.done = make(chan struct{})
			}
			o.earlier = append(o.earlier, p.done)
		}
	}
	t.ops = append(t.ops, o)
	return o
}

// wait blocks until every earlier overlapping operation has ended.
func (o *diskOp) wait() {
	for _, c := range o.earlier {
		<-c
	}
}

// end unregisters o and wakes the operations waiting for it.
func (t *inflight) end(o *diskOp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, p := range t.ops {
		if p == o {
			copy(t.ops[i:], t.ops[i+1:])
			t.ops[len(t.ops)-1] = nil
			t.ops = t.ops[:len(t.ops)-1]
			break
		}
	}
	if o.done != nil {
		close(o.done)
		o.done = nil
	}
	clear(o.earlier)
	o.earlier = o.earlier[:0]
	t.free = append(t.free, o)
	if len(t.ops) == 0 && t.idle != nil {
		t.idle.Broadcast()
	}
}

// oldestGen is the smallest write generation in flight, or the largest
// possible value when no change is in flight.
func (t *inflight) oldestGen() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	oldest := ^uint64(0)
	for _, o := range t.ops {
		if o.gen != 0 && o.gen < oldest {
			oldest = o.gen
		}
	}
	return oldest
}

// waitIdle blocks until no operation is in flight. Callers must make sure
// no new ones begin meanwhile (they hold the machine's lock).
func (t *inflight) waitIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = sync.NewCond(&t.mu)
	}
	for len(t.ops) > 0 {
		t.idle.Wait()
	}
}
