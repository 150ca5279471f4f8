package blockmap

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Wire encoding (docs/format/blockmap.md): a 40-byte header, a body, and a
// CRC-32C of everything before it. All integers are little-endian.
const (
	// Magic starts every encoded map or node message: ASCII "SBKM".
	Magic = "SBKM"
	// Version is the version this package writes. A reader accepts
	// MinVersion..MaxVersion.
	Version    = 1
	MinVersion = 1
	MaxVersion = 1

	// HeaderSize and TrailerSize are the fixed parts of every message.
	HeaderSize  = 40
	TrailerSize = 4

	runSize = 16
)

// Message kinds, header byte 6.
const (
	kindMap     = 1
	kindRequest = 2
	kindAnswer  = 3
)

// hashSHA256 is the only hash algorithm, header byte 7.
const hashSHA256 = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the decoded fixed header.
type header struct {
	kind      byte
	blockSize uint32
	fanout    uint32
	size      uint64
	level     uint32
	count     uint64
}

func appendHeader(dst []byte, h header) []byte {
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint16(dst, Version)
	dst = append(dst, h.kind, hashSHA256)
	dst = binary.LittleEndian.AppendUint32(dst, h.blockSize)
	dst = binary.LittleEndian.AppendUint32(dst, h.fanout)
	dst = binary.LittleEndian.AppendUint64(dst, h.size)
	dst = binary.LittleEndian.AppendUint32(dst, h.level)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	return binary.LittleEndian.AppendUint64(dst, h.count)
}

func appendTrailer(dst []byte, start int) []byte {
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// parseHeader checks, in order: length, magic, CRC, version, hash algorithm,
// reserved bytes, and that size fits an int64. It returns the header and
// the body.
func parseHeader(b []byte) (header, []byte, error) {
	if len(b) < HeaderSize+TrailerSize {
		return header{}, nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrTruncated, len(b), HeaderSize+TrailerSize)
	}
	if string(b[:4]) != Magic {
		return header{}, nil, ErrBadMagic
	}
	body := b[HeaderSize : len(b)-TrailerSize]
	if got, want := crc32.Checksum(b[:len(b)-TrailerSize], castagnoli), binary.LittleEndian.Uint32(b[len(b)-TrailerSize:]); got != want {
		return header{}, nil, fmt.Errorf("%w: crc %08x, stored %08x", ErrChecksum, got, want)
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v < MinVersion || v > MaxVersion {
		return header{}, nil, fmt.Errorf("%w: version %d, this reader accepts %d..%d", ErrBadVersion, v, MinVersion, MaxVersion)
	}
	if b[7] != hashSHA256 {
		return header{}, nil, fmt.Errorf("%w: hash algorithm %d", ErrCorrupt, b[7])
	}
	if binary.LittleEndian.Uint32(b[28:]) != 0 {
		return header{}, nil, fmt.Errorf("%w: reserved bytes not zero", ErrCorrupt)
	}
	h := header{
		kind:      b[6],
		blockSize: binary.LittleEndian.Uint32(b[8:]),
		fanout:    binary.LittleEndian.Uint32(b[12:]),
		size:      binary.LittleEndian.Uint64(b[16:]),
		level:     binary.LittleEndian.Uint32(b[24:]),
		count:     binary.LittleEndian.Uint64(b[32:]),
	}
	if h.size > math.MaxInt64 {
		return header{}, nil, fmt.Errorf("%w: size %d", ErrCorrupt, h.size)
	}
	return h, body, nil
}

// AppendMap appends the encoding of m to dst. m must be valid.
func AppendMap(dst []byte, m *Map) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return dst, fmt.Errorf("encode map: %w", err)
	}
	start := len(dst)
	dst = appendHeader(dst, header{kind: kindMap, blockSize: uint32(m.BlockSize), size: uint64(m.Size), count: uint64(len(m.Hashes))})
	for _, h := range m.Hashes {
		dst = append(dst, h[:]...)
	}
	return appendTrailer(dst, start), nil
}

// DecodeMap decodes a map encoded by AppendMap; b must be exactly one
// message. It returns an error wrapping ErrCorrupt (or ErrBadVersion) for
// bytes that are not a valid map, and allocates only after the length of b
// has been checked to hold every hash the header announces.
func DecodeMap(b []byte) (*Map, error) {
	h, body, err := parseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("decode map: %w", err)
	}
	if h.kind != kindMap || h.fanout != 0 || h.level != 0 {
		return nil, fmt.Errorf("decode map: %w: kind %d, fan-out %d, level %d", ErrCorrupt, h.kind, h.fanout, h.level)
	}
	if h.count != uint64(len(body))/HashSize || len(body)%HashSize != 0 {
		return nil, fmt.Errorf("decode map: %w: %d hashes in %d bytes", ErrCorrupt, h.count, len(body))
	}
	m := &Map{BlockSize: int(h.blockSize), Size: int64(h.size), Hashes: make([]Hash, h.count)}
	for i := range m.Hashes {
		copy(m.Hashes[i][:], body[i*HashSize:])
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("decode map: %w: %w", ErrCorrupt, err)
	}
	return m, nil
}

// AppendNodes appends the encoding of a request or an answer to dst. n must
// be valid.
func AppendNodes(dst []byte, n *Nodes) ([]byte, error) {
	if err := n.Validate(); err != nil {
		return dst, fmt.Errorf("encode nodes: %w", err)
	}
	kind := byte(kindRequest)
	if len(n.Hashes) > 0 {
		kind = kindAnswer
	}
	start := len(dst)
	dst = appendHeader(dst, header{
		kind: kind, blockSize: uint32(n.Params.BlockSize), fanout: uint32(n.Params.Fanout),
		size: uint64(n.Params.Size), level: uint32(n.Level), count: uint64(len(n.Runs)),
	})
	for _, r := range n.Runs {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.First))
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Count))
	}
	for _, h := range n.Hashes {
		dst = append(dst, h[:]...)
	}
	return appendTrailer(dst, start), nil
}

// DecodeNodes decodes a request or an answer encoded by AppendNodes; b must
// be exactly one message. Errors and allocation are as for DecodeMap.
func DecodeNodes(b []byte) (*Nodes, error) {
	h, body, err := parseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("decode nodes: %w", err)
	}
	if h.kind != kindRequest && h.kind != kindAnswer {
		return nil, fmt.Errorf("decode nodes: %w: kind %d", ErrCorrupt, h.kind)
	}
	if h.count > uint64(len(body))/runSize {
		return nil, fmt.Errorf("decode nodes: %w: %d runs in %d bytes", ErrCorrupt, h.count, len(body))
	}
	n := &Nodes{
		Params: Params{BlockSize: int(h.blockSize), Fanout: int(h.fanout), Size: int64(h.size)},
		Level:  int(h.level),
		Runs:   make([]Run, h.count),
	}
	var total uint64
	for i := range n.Runs {
		first := binary.LittleEndian.Uint64(body[i*runSize:])
		count := binary.LittleEndian.Uint64(body[i*runSize+8:])
		if first > math.MaxInt64 || count > math.MaxInt64 || total+count < total {
			return nil, fmt.Errorf("decode nodes: %w: run [%d, +%d)", ErrCorrupt, first, count)
		}
		total += count
		n.Runs[i] = Run{First: int64(first), Count: int64(count)}
	}
	rest := body[len(n.Runs)*runSize:]
	want := uint64(0)
	if h.kind == kindAnswer {
		want = total
	}
	if uint64(len(rest))%HashSize != 0 || uint64(len(rest))/HashSize != want {
		return nil, fmt.Errorf("decode nodes: %w: %d bytes of hashes for %d nodes", ErrCorrupt, len(rest), want)
	}
	if want > 0 {
		n.Hashes = make([]Hash, want)
		for i := range n.Hashes {
			copy(n.Hashes[i][:], rest[i*HashSize:])
		}
	}
	if err := n.Validate(); err != nil {
		return nil, fmt.Errorf("decode nodes: %w: %w", ErrCorrupt, err)
	}
	return n, nil
}
