package loadgen

import (
	"errors"
	"testing"
)

func TestBlockRoundTrip(t *testing.T) {
	for _, bs := range []int{512, 4096, 65536} {
		h := Header{BlockSize: bs, RunID: 7, Seq: 42, Offset: int64(3 * bs), Disk: 2, Index: 1, Count: 4}
		b := make([]byte, bs)
		Encode(b, h)
		got, err := DecodeBlock(b, nil)
		if err != nil || got != h {
			t.Fatalf("bs %d: got %+v, %v; want %+v", bs, got, err, h)
		}
	}
}

func TestBlockDamage(t *testing.T) {
	h := Header{BlockSize: 4096, RunID: 7, Seq: 42, Offset: 8192, Disk: 1, Index: 0, Count: 1}
	tests := []struct {
		name   string
		damage func(b []byte) []byte
		want   error
	}{
		{"zeros", func(b []byte) []byte { return make([]byte, len(b)) }, ErrNotBlock},
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }, ErrNotBlock},
		{"version", func(b []byte) []byte { b[9] = 9; return b }, ErrVersion},
		{"short", func(b []byte) []byte { return b[:2048] }, ErrBlockSize},
		{"header", func(b []byte) []byte { b[30] ^= 1; return b }, ErrChecksum},
		{"filler", func(b []byte) []byte { b[4000] ^= 0x80; return b }, ErrChecksum},
		{"checksum", func(b []byte) []byte { b[61] ^= 1; return b }, ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, h.BlockSize)
			Encode(b, h)
			if _, err := DecodeBlock(tt.damage(b), nil); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}
