package target

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/replica"
)

// Hydration copies a failed-over machine's export, disk by disk, to
// standalone image files (<data dir>/hydrated/<machine id>/<disk>.img),
// so the machine can later run without the replica and its history.
//
// It reads through the export's overlays, so what the running replica
// machine wrote is included. Consistency while the machine writes:
//
//  1. the first pass copies every disk, skipping zero chunks (the image
//     is sparse: made by truncation, only non-zero chunks written);
//  2. catch-up passes copy again every block the overlay holds (only what
//     the machine wrote since the export was made: a block that is not in
//     the overlay reads as the recovery point, which never changes),
//     until a pass ends with the overlay's write count what it was when
//     the pass began.
//
// When it completes, each image equals the export's disk as it was at
// the end of the last pass (CompletedAt). Writes the machine makes later
// land in the overlay only: the image is what the machine should switch
// to at a restart, after stopping it and hydrating again (which then
// copies only the overlay's blocks). With a machine that writes without
// pause the catch-up passes may not settle: hydration then stops after
// hydrateRounds with an error saying so.

// hydrateChunk is the unit of the first pass.
const hydrateChunk = 1 << 20

// hydrateRounds bounds the catch-up passes.
const hydrateRounds = 20

// hydration is one running (or finished) hydration of an export.
type hydration struct {
	export string
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	st control.Hydration
}

func (h *hydration) status() control.Hydration {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.st
	s.Images = append([]string(nil), h.st.Images...)
	return s
}

func (h *hydration) stop() {
	h.cancel()
	<-h.done
}

func (t *Target) hydratedDir(machineID string) string {
	return filepath.Join(t.o.DataDir, "hydrated", machineID)
}

// startHydration copies export name of machine id in the background.
func (t *Target) startHydration(ctx context.Context, id, name string) (*hydration, error) {
	var e *exported
	if t.front != nil {
		t.front.mu.Lock()
		e = t.front.exports[name]
		t.front.mu.Unlock()
	}
	if e == nil {
		return nil, fmt.Errorf("hydrate export %s: %w", name, ErrNoExport)
	}
	dir := t.hydratedDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hydrate export %s: %w", name, err)
	}
	hctx, cancel := context.WithCancel(ctx)
	h := &hydration{export: name, cancel: cancel, done: make(chan struct{})}
	for i, d := range e.info.Disks {
		h.st.Total += d.Size
		h.st.Images = append(h.st.Images, filepath.Join(dir, fmt.Sprintf("%d-%s.img", i, safeFileName(d.Name))))
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(h.done)
		began := time.Now()
		err := h.run(hctx, e.overlays)
		h.mu.Lock()
		if err != nil {
			h.st.Error = err.Error()
		} else {
			h.st.Complete, h.st.CompletedAt = true, time.Now().UTC()
		}
		h.mu.Unlock()
		switch {
		case err == nil:
			t.log.Info("hydration complete", "export", name, "bytes", h.st.Total, "took", time.Since(began).Round(time.Millisecond))
		case hctx.Err() == nil:
			t.log.Warn("hydration failed", "export", name, "err", err)
		}
	}()
	return h, nil
}

// run is the hydration: the first pass, then catch-up passes.
func (h *hydration) run(ctx context.Context, ovs []*replica.Overlay) error {
	files := make([]*os.File, len(ovs))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	since := make([]uint64, len(ovs))
	for i, ov := range ovs {
		since[i] = ov.Writes() // before the first read: every later write is caught up
		f, err := os.OpenFile(h.st.Images[i]+".part", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		files[i] = f
		if err := f.Truncate(ov.Size()); err != nil { // sparse
			return err
		}
	}
	for i, ov := range ovs {
		if err := h.firstPass(ctx, ov, files[i]); err != nil {
			return fmt.Errorf("disk %d: %w", i, err)
		}
	}
	buf := make([]byte, hydrateChunk)
	for i, ov := range ovs {
		settled := false
		for range hydrateRounds {
			if ov.Writes() == since[i] {
				settled = true
				break
			}
			since[i] = ov.Writes()
			if err := catchUp(ctx, ov, files[i], buf); err != nil {
				return fmt.Errorf("catch up disk %d: %w", i, err)
			}
		}
		if !settled {
			return fmt.Errorf("disk %d: the replica machine kept writing through %d catch-up passes; hydrate again with the machine stopped", i, hydrateRounds)
		}
	}
	for i, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := os.Rename(h.st.Images[i]+".part", h.st.Images[i]); err != nil {
			return err
		}
	}
	if len(files) > 0 {
		return syncDirOf(h.st.Images[0])
	}
	return nil
}

// catchUp copies every block the overlay holds, in runs.
// hydrateReaders is how many chunks the first pass reads at once: the
// disk and the export answer several requests faster than one at a time.
const hydrateReaders = 4

// firstPass copies every chunk of ov that is not all zeros into f, with
// hydrateReaders reads in flight (chunks are independent: each is
// written at its own offset).
func (h *hydration) firstPass(ctx context.Context, ov *replica.Overlay, f *os.File) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	offs := make(chan int64)
	errs := make(chan error, hydrateReaders)
	var wg sync.WaitGroup
	for range hydrateReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, hydrateChunk)
			for off := range offs {
				b := buf[:min(hydrateChunk, ov.Size()-off)]
				err := ov.ReadAt(ctx, b, off)
				if err != nil {
					err = fmt.Errorf("read at %d: %w", off, err)
				} else if !blockmap.AllZero(b) {
					_, err = f.WriteAt(b, off)
				}
				if err != nil {
					errs <- err
					cancel()
					return
				}
				h.mu.Lock()
				h.st.Done += int64(len(b))
				h.mu.Unlock()
			}
		}()
	}
feed:
	for off := int64(0); off < ov.Size(); off += hydrateChunk {
		select {
		case offs <- off:
		case <-ctx.Done():
			break feed
		}
	}
	close(offs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}

func catchUp(ctx context.Context, ov *replica.Overlay, f *os.File, buf []byte) error {
	const bs = replica.OverlayBlockSize
	blocks := (ov.Size() + bs - 1) / bs
	for k := int64(0); k < blocks; {
		if !ov.HasBlock(k) {
			k++
			continue
		}
		start := k
		for k < blocks && ov.HasBlock(k) && (k-start+1)*bs <= int64(len(buf)) {
			k++
		}
		off := start * bs
		b := buf[:min((k-start)*bs, ov.Size()-off)]
		if err := ov.ReadAt(ctx, b, off); err != nil {
			return err
		}
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return nil
}

// safeFileName keeps a disk name usable as a file name.
func safeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "disk"
	}
	return string(b)
}

func syncDirOf(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
