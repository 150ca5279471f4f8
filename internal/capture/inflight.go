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
}

type diskOp struct {
	disk     int
	off, end int64
	done     chan struct{} // made when a later operation must wait for this one
	earlier  []chan struct{}
}

// begin registers [off, end) of disk. Call it with the machine's lock held,
// right after the journal append, so registration order is journal order.
func (t *inflight) begin(disk int, off, end int64) *diskOp {
	t.mu.Lock()
	defer t.mu.Unlock()
	var o *diskOp
	if n := len(t.free); n > 0 {
		o, t.free = t.free[n-1], t.free[:n-1]
	} else {
		o = new(diskOp)
	}
	o.disk, o.off, o.end = disk, off, end
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
}
