package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/retention"
)

// writeImages writes disks as image files d.Name+".raw" in dir, sparsely
// (blocks of zeros are holes), and returns their absolute paths: the old
// primary machine's disks.
func writeImages(tb testing.TB, dir string, disks []DiskInfo, content [][]byte) []string {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	var paths []string
	for i, d := range disks {
		path := filepath.Join(dir, d.Name+".raw")
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		if err := f.Truncate(d.Size); err != nil {
			tb.Fatal(err)
		}
		b := content[i]
		for off := 0; off < len(b); off += seedBlock {
			p := b[off:min(off+seedBlock, len(b))]
			if allZero(p) {
				continue
			}
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				tb.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
		paths = append(paths, path)
	}
	return paths
}

func readImages(tb testing.TB, paths []string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, p := range paths {
		out = append(out, readFile(tb, p))
	}
	return out
}

// mustBeLinks fails unless every current image of the replica in dir is a
// symbolic link to its image in paths.
func mustBeLinks(tb testing.TB, dir string, paths []string) {
	tb.Helper()
	for i, d := range testDisks {
		link := filepath.Join(dir, currentDir, d.Name+imageExt)
		fi, err := os.Lstat(link)
		if err != nil {
			tb.Fatal(err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			tb.Fatalf("%s is not a symbolic link (%s)", link, fi.Mode())
		}
		if got, err := os.Readlink(link); err != nil || got != paths[i] {
			tb.Fatalf("%s links to %q (%v), want %q", link, got, err, paths[i])
		}
	}
}

// mustBeUnallocated fails unless the base images hold no data: sparse
// files of the disk's size with no block allocated.
func mustBeUnallocated(tb testing.TB, dir string) {
	tb.Helper()
	for _, d := range testDisks {
		path := filepath.Join(dir, baseDir, d.Name+imageExt)
		fi, err := os.Stat(path)
		if err != nil {
			tb.Fatal(err)
		}
		if fi.Size() != d.Size {
			tb.Errorf("%s: %d bytes, want %d", path, fi.Size(), d.Size)
		}
		if n := allocated(tb, path); n != 0 {
			tb.Errorf("%s: %d bytes allocated, want none (nothing copied)", path, n)
		}
	}
}

// TestCreateInPlace: a replica made in place over files with content
// reads that content at once with nothing copied; segments write into the
// files while a point from before still reads the old content (seeding
// reads through the links); prune, Seed, the block map, Close and a reopen
// work as for any replica; removing the replica leaves the files.
func TestCreateInPlace(t *testing.T) {
	ctx := context.Background()
	m := copyModel(t, 41, testDisks, copyPos)
	m.step = time.Minute
	images := writeImages(t, filepath.Join(t.TempDir(), "primary"), testDisks, m.gens[0].start)
	// A relative path is made absolute.
	t.Chdir(filepath.Dir(images[1]))
	dir := filepath.Join(t.TempDir(), "m")
	if err := CreateInPlace(dir, testMachine, testDisks, []string{images[0], filepath.Base(images[1])}); err != nil {
		t.Fatal(err)
	}
	mustBeLinks(t, dir, images)
	mustBeUnallocated(t, dir)
	if ents, _ := os.ReadDir(filepath.Join(dir, segmentsDir)); len(ents) != 0 {
		t.Errorf("segments: %v", ents)
	}

	now := new(time.Time)
	o := testOptions(dir)
	o.Retention, o.Now = retention.Policy{KeepAll: 10 * time.Minute}, func() time.Time { return *now }
	r := mustOpen(t, o)
	total := testDisks[0].Size + testDisks[1].Size
	if st := r.Status(); !st.InPlace || st.Consistent || st.Copying || st.SeedLeft != total || st.Points != 0 {
		t.Fatalf("status after create: %+v; want in place, not consistent, %d bytes to seed", st, total)
	}
	mustEqualDisks(t, "current after create", currentDisks(t, r), m.gens[0].start)

	// A rebase and a bookmark: consistent, and the latest view and the
	// point read the files' content, with nothing copied.
	if err := r.Rebase(ctx, copyPos, m.epoch); err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, m.withBookmark(0, "start"), m.g().at(m.g().sent))
	mustEqualDisks(t, "latest view", viewDisks(t, r, 0), m.gens[0].start)
	mustCheck(t, r, m)
	mustBeUnallocated(t, dir)
	if left := r.Status().SeedLeft; left != total {
		t.Errorf("seed_left %d, want %d: nothing seeded yet", left, total)
	}
	first := r.Points()[0].ID

	// Segments: the files get the writes; the first point still reads the
	// files' old content, from the base where a record overwrote a block.
	m.bookmarkEvery = 4
	for range 4 {
		mustApply(t, r, m.next(8), m.g().at(m.g().sent))
	}
	mustApply(t, r, m.withBookmark(4, "later"), m.g().at(m.g().sent))
	mustEqualDisks(t, "image files", readImages(t, images), m.live)
	mustEqualDisks(t, "first point", viewDisks(t, r, first), m.gens[0].start)
	mustCheck(t, r, m)
	mustSeedLeft(t, r)
	mustOverlayInPlace(t, r, first, m.gens[0].start[1], images[1], m.live[1])
	if n := seededBlocks(r); n[0] == 0 || n[1] == 0 {
		t.Errorf("seeded blocks %v: the records seeded none", n)
	}
	if n := allocated(t, filepath.Join(dir, baseDir, testDisks[0].Name+imageExt)); n == 0 {
		t.Error("base image of sda: nothing allocated after seeding (the allocation check sees nothing)")
	}

	// The block map of current hashes the files.
	for i, d := range testDisks {
		got, err := r.BlockMap(ctx, i, 4096)
		if err != nil {
			t.Fatal(err)
		}
		want, err := blockmap.Hasher{BlockSize: 4096}.Hash(ctx, bytes.NewReader(readFile(t, images[i])), d.Size, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Size != want.Size || !slices.Equal(got.Hashes, want.Hashes) {
			t.Errorf("disk %s: the block map of current is not the file's", d.Name)
		}
	}

	// A prune rolls the base (never current); Seed fills the base from the
	// files.
	*now = m.clock
	if _, remove := mustPrune(t, r, m, *now); len(remove) == 0 {
		t.Fatal("nothing pruned")
	}
	mustBeLinks(t, dir, images)
	mustEqualDisks(t, "image files after the prune", readImages(t, images), m.live)
	if left, err := r.Seed(ctx, 1<<40); err != nil || left != 0 {
		t.Fatalf("seed: %d, %v", left, err)
	}
	mustFullySeeded(t, r, m)
	mustCheck(t, r, m)

	// Close and reopen.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = mustOpen(t, o)
	if !r.Status().InPlace {
		t.Error("reopened: not in place")
	}
	mustBeLinks(t, dir, images)
	mustCheck(t, r, m)
	mustApply(t, r, m.withBookmark(6, "reopened"), m.g().at(m.g().sent))
	mustCheck(t, r, m)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	mustEqualDisks(t, "image files after close", readImages(t, images), m.live)

	// Removing the replica removes the links, not the files.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i, d := range testDisks {
		fi, err := os.Stat(images[i])
		if err != nil || fi.Size() != d.Size {
			t.Fatalf("image %s after removing the replica: %v, %v", images[i], fi, err)
		}
	}
	mustEqualDisks(t, "image files after removing the replica", readImages(t, images), m.live)
}

// TestCreateInPlaceCopy: initial replication's copy path writes into the
// linked files, and segments after it apply there too.
func TestCreateInPlaceCopy(t *testing.T) {
	m := copyModel(t, 42, testDisks, copyPos)
	old := make([][]byte, len(testDisks)) // the old primary's stale content
	for i, d := range testDisks {
		old[i] = bytes.Repeat([]byte{0x5a}, int(d.Size))
	}
	images := writeImages(t, filepath.Join(t.TempDir(), "primary"), testDisks, old)
	dir := filepath.Join(t.TempDir(), "m")
	if err := CreateInPlace(dir, testMachine, testDisks, images); err != nil {
		t.Fatal(err)
	}
	r := mustOpen(t, testOptions(dir))
	mustCopy(t, r, m)
	mustBeLinks(t, dir, images)
	mustBeEmptyBase(t, r)
	mustEqualDisks(t, "image files after the copy", readImages(t, images), m.gens[0].start)
	mustApply(t, r, m.withBookmark(10, "first"), m.g().at(m.g().sent))
	for range 3 {
		mustApply(t, r, m.next(10), m.g().at(m.g().sent))
	}
	mustEqualDisks(t, "image files", readImages(t, images), m.live)
	mustCheck(t, r, m)
	if !r.Status().InPlace {
		t.Error("not in place after the copy")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = mustOpen(t, testOptions(dir))
	mustCheck(t, r, m)
	mustEqualDisks(t, "image files after reopening", readImages(t, images), m.live)
}

// TestCreateInPlaceRefusals: a missing image, one of the wrong size, a
// directory, the same file twice, a wrong count or a used directory are
// refused with the image's name and sizes, and no image is changed.
func TestCreateInPlaceRefusals(t *testing.T) {
	content := [][]byte{bytes.Repeat([]byte{1}, int(testDisks[0].Size)), bytes.Repeat([]byte{2}, int(testDisks[1].Size))}
	pdir := filepath.Join(t.TempDir(), "primary")
	images := writeImages(t, pdir, testDisks, content)
	short := filepath.Join(pdir, "short.raw")
	writeFile(t, short, content[1][:testDisks[1].Size-512])
	long := filepath.Join(pdir, "long.raw")
	writeFile(t, long, append(bytes.Clone(content[1]), 1))
	missing := filepath.Join(pdir, "missing.raw")

	parent := t.TempDir()
	dir := filepath.Join(parent, "m")
	tests := []struct {
		name   string
		dir    string
		images []string
		want   []string // in the error
		is     error
	}{
		{"missing", dir, []string{images[0], missing}, []string{"disk sdb", missing, "no such file"}, fs.ErrNotExist},
		{"shorter", dir, []string{images[0], short}, []string{"disk sdb", short, fmt.Sprint(testDisks[1].Size - 512), fmt.Sprint(testDisks[1].Size)}, nil},
		{"longer", dir, []string{long, images[1]}, []string{"disk sda", long, fmt.Sprint(testDisks[1].Size + 1), fmt.Sprint(testDisks[0].Size)}, nil},
		{"directory", dir, []string{pdir, images[1]}, []string{"disk sda", pdir, "not a regular file or block device"}, nil},
		{"twice", dir, []string{images[0], images[0]}, []string{"disk sdb", "disk sda"}, nil},
		{"count", dir, images[:1], []string{"1 images for 2 disks"}, nil},
		{"not empty", pdir, images, nil, ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CreateInPlace(tt.dir, testMachine, testDisks, tt.images)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
	if t.Failed() {
		return
	}
	mustEqualDisks(t, "images after the refusals", readImages(t, images), content)
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing image: %v, want it still missing", err)
	}
	if fi, err := os.Stat(short); err != nil || fi.Size() != testDisks[1].Size-512 {
		t.Errorf("short image: %v, %v", fi, err)
	}
	if fi, err := os.Stat(long); err != nil || fi.Size() != testDisks[1].Size+1 {
		t.Errorf("long image: %v, %v", fi, err)
	}
}

// TestCrashCreateInPlace: a crash before the rename leaves no replica and
// the images as they were.
func TestCrashCreateInPlace(t *testing.T) {
	content := [][]byte{bytes.Repeat([]byte{3}, int(testDisks[0].Size)), bytes.Repeat([]byte{4}, int(testDisks[1].Size))}
	images := writeImages(t, filepath.Join(t.TempDir(), "primary"), testDisks, content)
	dir := filepath.Join(t.TempDir(), "m")
	failAt(t, "create-before-rename", 0)
	if err := CreateInPlace(dir, testMachine, testDisks, images); !errors.Is(err, errCrash) {
		t.Fatalf("create: %v, want the simulated crash", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	mustEqualDisks(t, "images after the crash", readImages(t, images), content)
	noFail()
	if err := CreateInPlace(dir, testMachine, testDisks, images); err != nil {
		t.Fatal(err)
	}
	mustBeLinks(t, dir, images)
}

// TestOpenInPlaceDamaged: Open refuses an in-place replica whose image is
// gone (naming where the link points) or whose link was replaced by a
// file, and leaves both as they are.
func TestOpenInPlaceDamaged(t *testing.T) {
	content := [][]byte{bytes.Repeat([]byte{5}, int(testDisks[0].Size)), bytes.Repeat([]byte{6}, int(testDisks[1].Size))}
	images := writeImages(t, filepath.Join(t.TempDir(), "primary"), testDisks, content)
	dir := filepath.Join(t.TempDir(), "m")
	if err := CreateInPlace(dir, testMachine, testDisks, images); err != nil {
		t.Fatal(err)
	}
	moved := images[1] + ".moved"
	if err := os.Rename(images[1], moved); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), testOptions(dir))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), images[1]) {
		t.Fatalf("open with the image gone: %v, want ErrDamaged naming %s", err, images[1])
	}
	if _, err := os.Stat(images[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open recreated the image: %v", err)
	}
	if err := os.Rename(moved, images[1]); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, currentDir, testDisks[0].Name+imageExt)
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	writeFile(t, link, content[0])
	if _, err := Open(context.Background(), testOptions(dir)); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "not a symbolic link") {
		t.Fatalf("open with a file for a link: %v, want ErrDamaged", err)
	}
	mustEqualDisks(t, "images", readImages(t, images), content)
}

// mustOverlayInPlace checks an overlay over disk 1 of point id, which
// reads want (mostly through the lazy base, from the linked file): writes
// to it read back and change neither the point nor the file, which holds
// file.
func mustOverlayInPlace(tb testing.TB, r *Replica, id uint64, want []byte, image string, file []byte) {
	tb.Helper()
	ctx := context.Background()
	v, err := r.OpenPoint(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	defer v.Close()
	o, err := CreateOverlay(filepath.Join(tb.TempDir(), "d1"), v.DiskReaderAt(1), v.Size(1), id)
	if err != nil {
		tb.Fatal(err)
	}
	defer o.Close()
	mustEqualBytes(tb, "overlay before writes", readOverlay(tb, o), want)
	if err := o.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 10000), 5000, false); err != nil {
		tb.Fatal(err)
	}
	got := readOverlay(tb, o)
	if !bytes.Equal(got[5000:15000], bytes.Repeat([]byte{0xee}, 10000)) {
		tb.Fatal("the overlay's write does not read back")
	}
	mustEqualBytes(tb, "overlay outside the write", got[15000:], want[15000:])
	mustEqualBytes(tb, "point after overlay writes", readDisk(tb, v.DiskReaderAt(1), v.Size(1)), want)
	mustEqualBytes(tb, "image file after overlay writes", readFile(tb, image), file)
}
