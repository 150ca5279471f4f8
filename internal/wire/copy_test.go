package wire

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestCopyFrame(t *testing.T) {
	data := bytes.Repeat([]byte{0xab}, 4096)
	p := AppendCopy(nil, CopyHeader{Disk: 2, Offset: 1 << 33, Length: 4096}, data)
	h, got, err := ParseCopy(p)
	if err != nil || h.Disk != 2 || h.Offset != 1<<33 || h.Length != 4096 || h.Flags != 0 || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %+v, %d bytes, %v", h, len(got), err)
	}
	if h, got, err = ParseCopy(AppendCopy(nil, CopyHeader{Flags: CopyZero, Offset: 8192, Length: 1 << 40}, nil)); err != nil || h.Length != 1<<40 || len(got) != 0 {
		t.Fatalf("zero run: %+v, %v", h, err)
	}
	if _, _, err = ParseCopy(AppendCopy(nil, CopyHeader{Flags: CopyZstd, Length: 4096}, []byte{1, 2, 3})); err != nil {
		t.Fatalf("zstd run: %v", err)
	}
	bad := map[string][]byte{
		"short":          p[:CopyHeaderSize-1],
		"reserved":       func() []byte { q := bytes.Clone(p); q[2] = 1; return q }(),
		"unknown flag":   AppendCopy(nil, CopyHeader{Flags: 0x80, Length: 1}, []byte{0}),
		"zero and zstd":  AppendCopy(nil, CopyHeader{Flags: CopyZero | CopyZstd, Length: 1}, nil),
		"empty run":      AppendCopy(nil, CopyHeader{Length: 0}, nil),
		"wraps":          AppendCopy(nil, CopyHeader{Flags: CopyZero, Offset: 1 << 63, Length: 1 << 63}, nil),
		"zero with data": AppendCopy(nil, CopyHeader{Flags: CopyZero, Length: 1}, []byte{0}),
		"short data":     AppendCopy(nil, CopyHeader{Length: 4096}, data[:100]),
		"too long":       AppendCopy(nil, CopyHeader{Flags: CopyZstd, Length: MaxCopyRun + 1}, []byte{1}),
	}
	for name, q := range bad {
		if _, _, err := ParseCopy(q); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// BenchmarkCopyFrames: 1 MiB Copy frames over TLS on loopback, the way
// initial replication sends them (a reader and a writer goroutine).
func BenchmarkCopyFrames(b *testing.B) {
	sf, cf := mustTLS(b)
	done := make(chan int64, 1)
	addr := serve(b, sf, nil, func(c *Conn) {
		var n int64
		for {
			t, p, err := c.Recv()
			if err != nil || t != TypeCopy {
				done <- n
				return
			}
			n += int64(len(p))
		}
	})
	tc, _ := cf.ClientConfig("localhost")
	c, err := Dial(context.Background(), addr, tc, Hello{Role: "agent", Stream: StreamData}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte{1, 2, 3, 4}, 1<<18-8) // 1 MiB with the header: serve allows frames of 1 MiB
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		h := CopyHeader{Offset: uint64(i) << 20, Length: uint64(len(data))}
		if err := c.SendParts(TypeCopy, h.Header(), data); err != nil {
			b.Fatal(err)
		}
	}
	c.Send(TypePing, nil)
	<-done
	c.Close()
}
