package nbd

import (
	"reflect"
	"testing"
)

// opt builds option data from 32-bit lengths, 16-bit counts and strings.
type u16 uint16
type u32 uint32

func optData(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case u16:
			b = be.AppendUint16(b, uint16(v))
		case u32:
			b = be.AppendUint32(b, uint32(v))
		case string:
			b = append(b, v...)
		default:
			panic(p)
		}
	}
	return b
}

func TestParseInfoRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want infoRequest
		ok   bool
	}{
		{"default export, no infos", optData(u32(0), u16(0)), infoRequest{}, true},
		{"named, two infos", optData(u32(4), "disk", u16(2), u16(infoName), u16(infoBlockSize)),
			infoRequest{name: "disk", infos: []uint16{infoName, infoBlockSize}}, true},
		{"unknown info types are kept", optData(u32(1), "a", u16(1), u16(999)), infoRequest{name: "a", infos: []uint16{999}}, true},
		{"empty", nil, infoRequest{}, false},
		{"too short", optData(u32(0), u16(0))[:5], infoRequest{}, false},
		{"name overruns", optData(u32(10), "disk", u16(0)), infoRequest{}, false},
		{"huge name length", optData(u32(0xffffffff), u16(0)), infoRequest{}, false},
		{"count overruns", optData(u32(0), u16(2), u16(1)), infoRequest{}, false},
		{"trailing bytes", optData(u32(0), u16(1), u16(1), "x"), infoRequest{}, false},
		{"NUL in name", optData(u32(3), "a\x00b", u16(0)), infoRequest{}, false},
		{"name not UTF-8", optData(u32(2), "\xff\xfe", u16(0)), infoRequest{}, false},
	} {
		got, err := parseInfoRequest(tc.data)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if tc.ok && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestParseMetaContextRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want metaContextRequest
		ok   bool
	}{
		{"no queries", optData(u32(0), u32(0)), metaContextRequest{}, true},
		{"one query", optData(u32(4), "disk", u32(1), u32(15), "base:allocation"),
			metaContextRequest{export: "disk", queries: []string{"base:allocation"}}, true},
		{"two queries", optData(u32(0), u32(2), u32(5), "base:", u32(6), "qemu:x"),
			metaContextRequest{queries: []string{"base:", "qemu:x"}}, true},
		{"empty query", optData(u32(0), u32(1), u32(0)), metaContextRequest{queries: []string{""}}, true},
		{"short", optData(u32(0)), metaContextRequest{}, false},
		{"name overruns", optData(u32(9), "disk", u32(0)), metaContextRequest{}, false},
		{"count too big", optData(u32(0), u32(1000000)), metaContextRequest{}, false},
		{"query overruns", optData(u32(0), u32(1), u32(100), "base:"), metaContextRequest{}, false},
		{"truncated query length", optData(u32(0), u32(2), u32(5), "base:", "xx"), metaContextRequest{}, false},
		{"trailing bytes", optData(u32(0), u32(0), "x"), metaContextRequest{}, false},
		{"NUL in query", optData(u32(0), u32(1), u32(3), "a:\x00"), metaContextRequest{}, false},
	} {
		got, err := parseMetaContextRequest(tc.data)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if tc.ok && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestMatchMetaContext(t *testing.T) {
	for _, tc := range []struct {
		queries   []string
		list, set bool // expected match for LIST and SET
		ok        bool
	}{
		{nil, true, false, true},
		{[]string{"base:allocation"}, true, true, true},
		{[]string{"base:"}, true, false, true},
		{[]string{"base:other"}, false, false, true},
		{[]string{"qemu:dirty-bitmap:x"}, false, false, true},
		{[]string{"x-foo:bar", "base:allocation"}, true, true, true},
		{[]string{"nocolon"}, false, false, false},
		{[]string{":leaf"}, false, false, false},
	} {
		for _, list := range []bool{true, false} {
			got, err := matchMetaContext(tc.queries, list)
			want := tc.set
			if list {
				want = tc.list
			}
			if (err == nil) != tc.ok || (tc.ok && got != want) {
				t.Errorf("match(%q, list=%v) = %v, %v; want %v, ok=%v", tc.queries, list, got, err, want, tc.ok)
			}
		}
	}
}

func TestValidateRequest(t *testing.T) {
	const size = 1 << 20
	rw := exportState{size: size, structured: true, blockStatus: true}
	ro := exportState{size: size, readOnly: true}
	simple := exportState{size: size}
	for _, tc := range []struct {
		name  string
		h     requestHeader
		st    exportState
		errno uint32
	}{
		{"read", requestHeader{typ: cmdRead, offset: 0, length: 4096}, rw, 0},
		{"read to the end", requestHeader{typ: cmdRead, offset: size - 1, length: 1}, rw, 0},
		{"read zero at the end", requestHeader{typ: cmdRead, offset: size, length: 0}, rw, 0},
		{"read past the end", requestHeader{typ: cmdRead, offset: size - 1, length: 2}, rw, errInval},
		{"read offset past the end", requestHeader{typ: cmdRead, offset: size + 1, length: 0}, rw, errInval},
		{"read offset overflow", requestHeader{typ: cmdRead, offset: 1<<64 - 1, length: 2}, rw, errInval},
		{"read too big, structured", requestHeader{typ: cmdRead, length: maxPayloadSize + 1}, rw, errOverflow},
		{"read too big, simple", requestHeader{typ: cmdRead, length: maxPayloadSize + 1}, simple, errInval},
		{"read DF structured", requestHeader{typ: cmdRead, flags: cmdFlagDF, length: 1}, rw, 0},
		{"read DF simple", requestHeader{typ: cmdRead, flags: cmdFlagDF, length: 1}, simple, errInval},
		{"read FUA", requestHeader{typ: cmdRead, flags: cmdFlagFUA, length: 1}, rw, 0},
		{"write", requestHeader{typ: cmdWrite, flags: cmdFlagFUA, length: 4096}, rw, 0},
		{"write past the end", requestHeader{typ: cmdWrite, offset: size, length: 1}, rw, errNoSpc},
		{"write read-only", requestHeader{typ: cmdWrite, length: 1}, ro, errPerm},
		{"write NO_HOLE", requestHeader{typ: cmdWrite, flags: cmdFlagNoHole, length: 1}, rw, errInval},
		{"zeroes NO_HOLE FUA", requestHeader{typ: cmdWriteZeroes, flags: cmdFlagNoHole | cmdFlagFUA, length: size}, rw, 0},
		{"zeroes past the end", requestHeader{typ: cmdWriteZeroes, offset: 1, length: size}, rw, errNoSpc},
		{"zeroes FAST_ZERO", requestHeader{typ: cmdWriteZeroes, flags: cmdFlagFastZero, length: 1}, rw, errInval},
		{"zeroes read-only", requestHeader{typ: cmdWriteZeroes, length: 1}, ro, errPerm},
		{"trim", requestHeader{typ: cmdTrim, length: size}, rw, 0},
		{"trim past the end", requestHeader{typ: cmdTrim, offset: size, length: 1}, rw, errInval},
		{"trim read-only", requestHeader{typ: cmdTrim, length: 1}, ro, errPerm},
		{"flush", requestHeader{typ: cmdFlush}, ro, 0},
		{"flush ignores offset", requestHeader{typ: cmdFlush, offset: 1 << 62}, rw, 0},
		{"flush REQ_ONE", requestHeader{typ: cmdFlush, flags: cmdFlagReqOne}, rw, errInval},
		{"block status", requestHeader{typ: cmdBlockStatus, flags: cmdFlagReqOne, length: size}, rw, 0},
		{"block status not negotiated", requestHeader{typ: cmdBlockStatus, length: 1}, simple, errInval},
		{"block status zero length", requestHeader{typ: cmdBlockStatus, length: 0}, rw, errInval},
		{"block status past the end", requestHeader{typ: cmdBlockStatus, offset: 1, length: size}, rw, errInval},
		{"disc with junk", requestHeader{typ: cmdDisc, flags: 0xffff, offset: 5, length: 5}, rw, 0},
		{"cache", requestHeader{typ: cmdCache, length: 1}, rw, errInval},
		{"unknown command", requestHeader{typ: 99}, rw, errInval},
		{"unknown flag", requestHeader{typ: cmdRead, flags: 1 << 15, length: 1}, rw, errInval},
	} {
		errno, msg := validateRequest(&tc.h, tc.st)
		if errno != tc.errno {
			t.Errorf("%s: errno %d (%s), want %d", tc.name, errno, msg, tc.errno)
		}
		if (errno != 0) != (msg != "") {
			t.Errorf("%s: errno %d with message %q", tc.name, errno, msg)
		}
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 1 << 20, maxPayloadSize, 1<<26 + 1} {
		b := getBuf(n)
		if len(*b) != n {
			t.Errorf("getBuf(%d) has length %d", n, len(*b))
		}
		putBuf(b)
	}
	if raceEnabled {
		return
	}
	allocs := testing.AllocsPerRun(100, func() { putBuf(getBuf(4096)) })
	if allocs != 0 {
		t.Errorf("getBuf/putBuf allocate %v times", allocs)
	}
}
