package journal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

// The examples use fixed times so that their bytes never change.
const (
	created = 1704067200_000000000 // 2024-01-01T00:00:00Z in unix nanoseconds
	sealed  = created + 2_000000000
)

var machineID = [16]byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

// tinySegment is the segment docs/format/journal.md dissects: one 4-byte
// write, one app-consistent bookmark, sealed.
func tinySegment() []byte {
	var buf bytes.Buffer
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: machineID, Epoch: 1, FirstSeq: 1, Created: created})
	if err != nil {
		panic(err)
	}
	recs := []journal.Record{
		{Kind: journal.KindWrite, Disk: 0, Offset: 4096, Length: 4, Time: created + 1_000000, Data: []byte{0xde, 0xad, 0xbe, 0xef}},
		{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Time: created + 2_000000, Data: []byte("daily")},
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil {
			panic(err)
		}
	}
	if _, err := w.Seal(sealed); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func ExampleNewWriter() {
	var buf bytes.Buffer
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: machineID, Epoch: 1, FirstSeq: 1, Created: created})
	if err != nil {
		fmt.Println(err)
		return
	}
	recs := []journal.Record{
		{Kind: journal.KindWrite, Disk: 0, Offset: 4096, Length: 4, Data: []byte("abcd")},
		{Kind: journal.KindZero, Flags: journal.FlagNoHole, Disk: 1, Offset: 0, Length: 1 << 20},
		{Kind: journal.KindTrim, Disk: 1, Offset: 1 << 20, Length: 1 << 20},
		{Kind: journal.KindBookmark, Data: []byte("interval")},
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil { // Append assigns recs[i].Seq
			fmt.Println(err)
			return
		}
	}
	t, err := w.Seal(sealed)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("last seq %d, %d records, %d payload bytes, %d bytes in all\n", t.LastSeq, t.Count, t.Payload, buf.Len())
	fmt.Println("segment ends at", t.Pos())
	// Output:
	// last seq 4, 4 records, 12 payload bytes, 396 bytes in all
	// segment ends at seq 4 chain d200fc4e4fc3223b
}

func ExampleNewReader() {
	rd, err := journal.NewReader(bytes.NewReader(tinySegment()))
	if err != nil {
		fmt.Println(err)
		return
	}
	h := rd.Header()
	fmt.Printf("machine %x epoch %d continues from %s\n", h.MachineID, h.Epoch, h.Prev())
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			break // a valid trailer
		}
		if err != nil {
			fmt.Println(err) // ErrNotSealed for an active segment; ErrCorrupt and friends for damage
			return
		}
		switch rec.Kind {
		case journal.KindBookmark:
			fmt.Printf("seq %d bookmark %q app-consistent=%v\n", rec.Seq, rec.Data, rec.Flags&journal.FlagAppConsistent != 0)
		default:
			fmt.Printf("seq %d %s disk %d [%d, %d) data %x\n", rec.Seq, rec.Kind, rec.Disk, rec.Offset, rec.End(), rec.Data)
		}
	}
	t, _ := rd.Trailer()
	fmt.Printf("sealed: %d records, %s\n", t.Count, t.Pos())
	// Output:
	// machine 00112233445566778899aabbccddeeff epoch 1 continues from seq 0 chain 0000000000000000
	// seq 1 write disk 0 [4096, 4100) data deadbeef
	// seq 2 bookmark "daily" app-consistent=true
	// sealed: 2 records, seq 2 chain ebbc527a96b93d70
}

// A reader of an active segment (no trailer yet) gets ErrNotSealed after
// the last whole record, whether the file ends there or preallocated zeros
// follow; a torn record gives ErrTruncated instead. Either way Offset is
// where a recovering writer cuts the file.
func ExampleReader_Offset() {
	seg := tinySegment()
	active := seg[:len(seg)-journal.TrailerSize]
	preallocated := append(bytes.Clone(active), make([]byte, 4096)...)
	torn := active[:len(active)-3]
	for _, b := range [][]byte{active, preallocated, torn} {
		rd, err := journal.NewReader(bytes.NewReader(b))
		if err != nil {
			fmt.Println(err)
			return
		}
		var rec journal.Record
		for err = rd.Next(&rec); err == nil; err = rd.Next(&rec) {
		}
		fmt.Printf("%d bytes: records=%d offset=%d not-sealed=%v truncated=%v\n",
			len(b), rd.Count(), rd.Offset(), errors.Is(err, journal.ErrNotSealed), errors.Is(err, journal.ErrTruncated))
	}
	// Output:
	// 233 bytes: records=2 offset=233 not-sealed=true truncated=false
	// 4329 bytes: records=2 offset=233 not-sealed=true truncated=false
	// 230 bytes: records=1 offset=180 not-sealed=false truncated=true
}

func ExampleHeader_Continues() {
	have := journal.Pos{Seq: 10, Chain: 0xc0ffee}
	for _, h := range []journal.Header{
		{FirstSeq: 11, PrevChain: 0xc0ffee}, // continues
		{FirstSeq: 13, PrevChain: 0xc0ffee}, // seq 11 and 12 are missing
		{FirstSeq: 11, PrevChain: 0xbad},    // another history
		{FirstSeq: 6, PrevChain: 0xbad},     // starts before have: a retried segment, say
	} {
		err := h.Continues(have)
		var pm *journal.PosMismatchError
		if errors.As(err, &pm) {
			fmt.Printf("gap=%v fork=%v: %v\n", pm.Gap(), pm.Fork(), err)
		} else {
			fmt.Println("continues:", err == nil)
		}
	}
	// Output:
	// continues: true
	// gap=true fork=false: journal: position mismatch (gap): have seq 10 chain 0000000000c0ffee, segment continues from seq 12 chain 0000000000c0ffee
	// gap=false fork=true: journal: position mismatch (fork): have seq 10 chain 0000000000c0ffee, segment continues from seq 10 chain 0000000000000bad
	// gap=false fork=false: journal: position mismatch (overlap): have seq 10 chain 0000000000c0ffee, segment continues from seq 5 chain 0000000000000bad
}

// crc64XZ is CRC-64/XZ written out bit by bit from its catalogue
// definition (width 64, poly 0x42f0e1eba9ea3693 reflected, init and xorout
// all ones), independent of hash/crc64, to show that the chain is exactly
// that CRC.
func crc64XZ(b []byte) uint64 {
	const polyReflected = 0xc96c5795d7870f42 // 0x42f0e1eba9ea3693, bits reversed
	crc := ^uint64(0)
	for _, c := range b {
		crc ^= uint64(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ polyReflected
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

// recordCRCs walks a sealed segment's bytes without the package and
// returns every record's stored CRC, checking each against CRC-32C of the
// record's payload followed by its first 44 bytes.
func recordCRCs(seg []byte) []uint32 {
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	var crcs []uint32
	b := seg[journal.HeaderSize:]
	for b[0] != 'S' { // 'S' starts the trailer magic; a record starts with its kind
		n := journal.RecordHeaderSize + int(binary.LittleEndian.Uint32(b[4:8]))
		stored := binary.LittleEndian.Uint32(b[44:48])
		sum := crc32.Update(crc32.Checksum(b[journal.RecordHeaderSize:n], castagnoli), castagnoli, b[:44])
		if sum != stored {
			panic("record crc")
		}
		crcs = append(crcs, stored)
		b = b[n:]
	}
	return crcs
}

// The chain after record n is CRC-64/XZ of the little-endian CRCs of
// records 1..n, concatenated: a segment's trailer chain vouches for the
// whole history since sequence 1, not just for its own records.
func ExamplePos_Next() {
	first := tinySegment()
	h1, _ := journal.ParseHeader(first)
	rd, _ := journal.NewReader(bytes.NewReader(first))
	var rec journal.Record
	for rd.Next(&rec) == nil {
	}
	t1, _ := rd.Trailer()

	// A second segment continues from the first one's trailer.
	var buf bytes.Buffer
	w, _ := journal.NewWriter(&buf, journal.Header{MachineID: h1.MachineID, Epoch: 1, FirstSeq: t1.LastSeq + 1, PrevChain: t1.Chain, Created: sealed})
	_ = w.Append(&journal.Record{Kind: journal.KindTrim, Disk: 0, Offset: 0, Length: 4096})
	t2, _ := w.Seal(sealed)

	var concat []byte
	var pos journal.Pos // the start of the journal
	for _, crc := range append(recordCRCs(first), recordCRCs(buf.Bytes())...) {
		fmt.Printf("record crc %08x\n", crc)
		concat = binary.LittleEndian.AppendUint32(concat, crc)
		pos = pos.Next(crc)
	}
	fmt.Printf("CRC-64/XZ check value %016x\n", crc64XZ([]byte("123456789")))
	fmt.Printf("trailer chain         %016x\n", t2.Chain)
	fmt.Printf("CRC-64/XZ of the CRCs %016x\n", crc64XZ(concat))
	fmt.Printf("hash/crc64 ECMA       %016x\n", crc64.Checksum(concat, crc64.MakeTable(crc64.ECMA)))
	fmt.Printf("Pos.Next, folded      %016x (%s)\n", pos.Chain, pos)
	// Output:
	// record crc 1a6994ee
	// record crc 0d1f41f9
	// record crc 2e6e7f32
	// CRC-64/XZ check value 995dc9bbdf1939fa
	// trailer chain         d772b4d9d0e18536
	// CRC-64/XZ of the CRCs d772b4d9d0e18536
	// hash/crc64 ECMA       d772b4d9d0e18536
	// Pos.Next, folded      d772b4d9d0e18536 (seq 3 chain d772b4d9d0e18536)
}

// dump writes b as `hexdump -C` does, numbering lines from base.
func dump(w io.Writer, base int, b []byte) {
	for len(b) > 0 {
		line := b[:min(16, len(b))]
		b = b[len(line):]
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

// dumpTinySegment is the annotated hex of tinySegment, part by part.
func dumpTinySegment(w io.Writer) {
	seg := tinySegment()
	off := 0
	part := func(title string, n int) {
		fmt.Fprintf(w, "%s: bytes %d..%d\n", title, off, off+n)
		dump(w, off, seg[off:off+n])
		off += n
	}
	part("header", journal.HeaderSize)
	part("record seq 1 (write)", journal.RecordHeaderSize+4)
	part("record seq 2 (bookmark)", journal.RecordHeaderSize+len("daily"))
	part("trailer", journal.TrailerSize)
	if off != len(seg) {
		panic("parts do not cover the segment")
	}
}

// Example_bytes prints the tiny segment of docs/format/journal.md. If this
// output changes, the format changed: update the document (the test below
// checks that it shows exactly these bytes) and think about Version.
func Example_bytes() {
	dumpTinySegment(os.Stdout)
	// Output:
	// header: bytes 0..128
	// 00000000  53 54 42 59 4a 53 45 47  01 00 00 00 80 00 00 00  |STBYJSEG........|
	// 00000010  00 11 22 33 44 55 66 77  88 99 aa bb cc dd ee ff  |.."3DUfw........|
	// 00000020  01 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00  |................|
	// 00000030  00 00 00 00 00 00 00 00  00 00 65 01 17 10 a6 17  |..........e.....|
	// 00000040  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 00000050  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 00000060  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 00000070  00 00 00 00 00 00 00 00  00 00 00 00 09 c2 af d4  |................|
	// record seq 1 (write): bytes 128..180
	// 00000080  01 00 00 00 04 00 00 00  01 00 00 00 00 00 00 00  |................|
	// 00000090  00 10 00 00 00 00 00 00  04 00 00 00 00 00 00 00  |................|
	// 000000a0  40 42 74 01 17 10 a6 17  00 00 00 00 ee 94 69 1a  |@Bt...........i.|
	// 000000b0  de ad be ef                                       |....|
	// record seq 2 (bookmark): bytes 180..233
	// 000000b4  04 01 00 00 05 00 00 00  02 00 00 00 00 00 00 00  |................|
	// 000000c4  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
	// 000000d4  80 84 83 01 17 10 a6 17  00 00 00 00 f9 41 1f 0d  |.............A..|
	// 000000e4  64 61 69 6c 79                                    |daily|
	// trailer: bytes 233..297
	// 000000e9  53 54 42 59 4a 45 4e 44  02 00 00 00 00 00 00 00  |STBYJEND........|
	// 000000f9  02 00 00 00 00 00 00 00  70 3d b9 96 7a 52 bc eb  |........p=..zR..|
	// 00000109  00 94 9a 78 17 10 a6 17  09 00 00 00 00 00 00 00  |...x............|
	// 00000119  00 00 00 00 00 00 00 00  00 00 00 00 da 96 6c 41  |..............lA|
}

// TestDocHexExample keeps docs/format/journal.md honest: the hex example
// in it must be exactly what Example_bytes prints.
func TestDocHexExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/format/journal.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- hex-example:begin -->\n```text\n", "```\n<!-- hex-example:end -->"
	s := string(doc)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("docs/format/journal.md has no block between %q and %q", begin, end)
	}
	var want strings.Builder
	dumpTinySegment(&want)
	if got := s[i+len(begin) : j]; got != want.String() {
		t.Errorf("the hex example in docs/format/journal.md is stale; replace it with:\n%s", want.String())
	}
}
