package segpack_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/segpack"
)

// The examples use fixed times so that their bytes never change.
const created = 1704067200_000000000 // 2024-01-01T00:00:00Z in unix nanoseconds

// exampleSegment is the segment docs/format/segpack.md packs: a write of a
// zero block, two equal blocks and a 100-byte tail, and a bookmark.
func exampleSegment() []byte {
	var buf bytes.Buffer
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: [16]byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}, Epoch: 1, FirstSeq: 1, Created: created})
	if err != nil {
		panic(err)
	}
	x := bytes.Repeat([]byte("x"), 512)
	data := bytes.Join([][]byte{make([]byte, 512), x, x, []byte(strings.Repeat("0123456789", 10))}, nil)
	recs := []journal.Record{
		{Kind: journal.KindWrite, Offset: 1 << 20, Length: uint64(len(data)), Time: created + 1_000000, Data: data},
		{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Time: created + 2_000000, Data: []byte("daily")},
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil {
			panic(err)
		}
	}
	if _, err := w.Seal(created + 2_000000000); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// exampleOptions are small so that the example is short.
var exampleOptions = segpack.Options{BlockSize: 512, Window: 8 * 512, Level: segpack.LevelNone}

func ExamplePacker() {
	opt := segpack.Options{BlockSize: 512} // a 32 MiB window, fastest zstd
	p, err := segpack.NewPacker(opt)
	if err != nil {
		fmt.Println(err)
		return
	}
	u, err := segpack.NewUnpacker(opt) // the other end, with the same options
	if err != nil {
		fmt.Println(err)
		return
	}
	seg := exampleSegment()
	for range 2 { // the second time, its blocks are in the window
		packed, st, err := p.Pack(nil, seg)
		if err != nil {
			fmt.Println(err)
			return
		}
		got, err := u.Unpack(nil, packed)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%d bytes in, %d out: %d zero, %d dedup, %d literal; same bytes back: %v\n",
			st.In, st.Out, st.ZeroBytes, st.DedupBytes, st.LiteralBytes, bytes.Equal(got, seg))
	}
	fmt.Println("window:", u.Window())
	// Output:
	// 1929 bytes in, 271 out: 512 zero, 512 dedup, 905 literal; same bytes back: true
	// 1929 bytes in, 267 out: 512 zero, 1024 dedup, 393 literal; same bytes back: true
	// window: block size 512, 65536 blocks, seq 1
}

// dump writes b as `hexdump -C` does, numbering lines from base and
// writing a line that repeats the one before as "*".
func dump(w io.Writer, base int, b []byte) {
	var prev []byte
	star := false
	for len(b) > 0 {
		line := b[:min(16, len(b))]
		b = b[len(line):]
		if len(line) == 16 && bytes.Equal(line, prev) {
			if !star {
				fmt.Fprintln(w, "*")
				star = true
			}
			base += 16
			continue
		}
		prev, star = line, false
		var hexs, text strings.Builder
		for i := range 16 {
			if i == 8 {
				hexs.WriteByte(' ')
			}
			if i < len(line) {
				fmt.Fprintf(&hexs, " %02x", line[i])
				if c := line[i]; c >= 0x20 && c < 0x7f {
					text.WriteByte(c)
				} else {
					text.WriteByte('.')
				}
			} else {
				hexs.WriteString("   ")
			}
		}
		fmt.Fprintf(w, "%08x %s  |%s|\n", base, hexs.String(), text.String())
		base += len(line)
	}
}

// dumpExample packs exampleSegment and prints it op by op.
func dumpExample(w io.Writer) {
	p, err := segpack.NewPacker(exampleOptions)
	if err != nil {
		panic(err)
	}
	packed, _, err := p.Pack(nil, exampleSegment())
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(w, "header: bytes 0..%d\n", segpack.HeaderSize)
	dump(w, 0, packed[:segpack.HeaderSize])
	for off := segpack.HeaderSize; off < len(packed); {
		var args []uint64
		n := 1
		for range map[byte]int{1: 1, 2: 1, 3: 1, 4: 2}[packed[off]] {
			v, m := binary.Uvarint(packed[off+n:])
			args, n = append(args, v), n+m
		}
		name := map[byte]string{1: "literal", 2: "zero", 3: "block", 4: "ref"}[packed[off]]
		switch packed[off] {
		case 1:
			n += int(args[0])
		case 3:
			n += int(args[0]) * exampleOptions.BlockSize
		}
		fmt.Fprintf(w, "op %s %v: bytes %d..%d\n", name, args, off, off+n)
		dump(w, off, packed[off:off+n])
		off += n
	}
}

// Example_bytes prints the packed segment of docs/format/segpack.md. If
// this output changes, the format changed: update the document (the test
// below checks that it shows exactly these bytes) and think about Version.
func Example_bytes() {
	dumpExample(os.Stdout)
	// Output:
	// header: bytes 0..64
	// 00000000  53 54 42 59 50 41 43 4b  01 00 00 00 40 00 00 00  |STBYPACK....@...|
	// 00000010  00 02 00 00 08 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 00000020  89 07 00 00 00 00 00 00  97 03 00 00 00 00 00 00  |................|
	// 00000030  97 03 00 00 00 00 00 00  d1 5f 56 5a cb c3 5a 37  |........._VZ..Z7|
	// op literal [176]: bytes 64..243
	// 00000040  01 b0 01 53 54 42 59 4a  53 45 47 01 00 00 00 80  |...STBYJSEG.....|
	// 00000050  00 00 00 00 11 22 33 44  55 66 77 88 99 aa bb cc  |....."3DUfw.....|
	// 00000060  dd ee ff 01 00 00 00 00  00 00 00 01 00 00 00 00  |................|
	// 00000070  00 00 00 00 00 00 00 00  00 00 00 00 00 65 01 17  |.............e..|
	// 00000080  10 a6 17 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 00000090  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// *
	// 000000b0  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 09  |................|
	// 000000c0  c2 af d4 01 00 00 00 64  06 00 00 01 00 00 00 00  |.......d........|
	// 000000d0  00 00 00 00 00 10 00 00  00 00 00 64 06 00 00 00  |...........d....|
	// 000000e0  00 00 00 40 42 74 01 17  10 a6 17 00 00 00 00 bd  |...@Bt..........|
	// 000000f0  a3 ff 9a                                          |...|
	// op zero [512]: bytes 243..246
	// 000000f3  02 80 04                                          |...|
	// op block [1]: bytes 246..760
	// 000000f6  03 01 78 78 78 78 78 78  78 78 78 78 78 78 78 78  |..xxxxxxxxxxxxxx|
	// 00000106  78 78 78 78 78 78 78 78  78 78 78 78 78 78 78 78  |xxxxxxxxxxxxxxxx|
	// *
	// 000002f6  78 78                                             |xx|
	// op ref [1 1]: bytes 760..763
	// 000002f8  04 01 01                                          |...|
	// op literal [217]: bytes 763..983
	// 000002fb  01 d9 01 30 31 32 33 34  35 36 37 38 39 30 31 32  |...0123456789012|
	// 0000030b  33 34 35 36 37 38 39 30  31 32 33 34 35 36 37 38  |3456789012345678|
	// 0000031b  39 30 31 32 33 34 35 36  37 38 39 30 31 32 33 34  |9012345678901234|
	// 0000032b  35 36 37 38 39 30 31 32  33 34 35 36 37 38 39 30  |5678901234567890|
	// 0000033b  31 32 33 34 35 36 37 38  39 30 31 32 33 34 35 36  |1234567890123456|
	// 0000034b  37 38 39 30 31 32 33 34  35 36 37 38 39 30 31 32  |7890123456789012|
	// 0000035b  33 34 35 36 37 38 39 04  01 00 00 05 00 00 00 02  |3456789.........|
	// 0000036b  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 0000037b  00 00 00 00 00 00 00 80  84 83 01 17 10 a6 17 00  |................|
	// 0000038b  00 00 00 f9 41 1f 0d 64  61 69 6c 79 53 54 42 59  |....A..dailySTBY|
	// 0000039b  4a 45 4e 44 02 00 00 00  00 00 00 00 02 00 00 00  |JEND............|
	// 000003ab  00 00 00 00 d7 1a ee 67  c7 ab 1a c1 00 94 9a 78  |.......g.......x|
	// 000003bb  17 10 a6 17 69 06 00 00  00 00 00 00 00 00 00 00  |....i...........|
	// 000003cb  00 00 00 00 00 00 00 00  0e 53 ae 2c              |.........S.,|
}

// TestDocHexExample keeps docs/format/segpack.md honest: the hex example in
// it must be exactly what Example_bytes prints.
func TestDocHexExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/format/segpack.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- hex-example:begin -->\n```text\n", "```\n<!-- hex-example:end -->"
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("docs/format/segpack.md has no block between %q and %q", begin, end)
	}
	var want strings.Builder
	dumpExample(&want)
	if got := s[i+len(begin) : j]; got != want.String() {
		t.Errorf("the hex example in docs/format/segpack.md is stale; replace it with:\n%s", want.String())
	}
}
