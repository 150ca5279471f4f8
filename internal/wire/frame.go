package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Type is a frame's type.
type Type uint8

// Frame types. Their numbers are part of the protocol.
const (
	TypeHello   Type = 1  // client → server, JSON Hello
	TypeWelcome Type = 2  // server → client, JSON Welcome
	TypeError   Type = 3  // either way, JSON Error; on a data stream the sender closes after it, on a control connection it answers one call
	TypeOpen    Type = 4  // data: client → server, JSON Open
	TypeOpened  Type = 5  // data: server → client, JSON Opened
	TypeSegment Type = 6  // data: client → server, the verbatim bytes of one sealed segment
	TypePacked  Type = 7  // data: client → server, one segment packed by internal/segpack
	TypeRebase  Type = 8  // data: client → server, JSON Rebase
	TypeAck     Type = 9  // data: server → client, JSON Ack
	TypePing    Type = 10 // client → server (servers send Acks instead), empty; keeps idle connections checked
	TypeCall    Type = 11 // control: client → server, JSON Call
	TypeReply   Type = 12 // control: server → client, JSON Reply
	TypeBlob    Type = 13 // control: server → client, raw bytes following a Reply with Blob set
	TypeCopy    Type = 14 // data: client → server, one run of disk blocks (EncodeCopy), after a Rebase with Copy accepted
	TypeCopyEnd Type = 15 // data: client → server, JSON CopyEnd: the copy is complete
)

var typeNames = map[Type]string{
	TypeHello: "hello", TypeWelcome: "welcome", TypeError: "error", TypeOpen: "open",
	TypeOpened: "opened", TypeSegment: "segment", TypePacked: "packed", TypeRebase: "rebase",
	TypeAck: "ack", TypePing: "ping", TypeCall: "call", TypeReply: "reply", TypeBlob: "blob",
	TypeCopy: "copy", TypeCopyEnd: "copy-end",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// FrameHeaderSize is the size of a frame header.
const FrameHeaderSize = 8

// DefaultMaxFrame bounds a frame's payload unless Options say otherwise:
// a segment of the largest segment size an agent may use (64 MiB) plus
// room for its trailer and packing overhead.
const DefaultMaxFrame = 65 << 20

// writeFrame writes one frame. The caller serialises writers.
func writeFrame(w io.Writer, t Type, payload []byte) error {
	var h [FrameHeaderSize]byte
	h[0] = byte(t)
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns its type
// and payload. A payload over max is an error before anything is allocated.
func readFrame(r io.Reader, buf []byte, max int) (Type, []byte, error) {
	var h [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, buf, err
	}
	t := Type(h[0])
	if h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return t, buf, fmt.Errorf("%w: %s frame with flags or reserved bits set", ErrProtocol, t)
	}
	n := binary.BigEndian.Uint32(h[4:])
	if int64(n) > int64(max) {
		return t, buf, fmt.Errorf("%w: %s frame of %d bytes, at most %d", ErrProtocol, t, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return t, buf, err
	}
	return t, buf, nil
}

// Decode unmarshals a JSON frame payload into v. Unknown fields are
// ignored: messages are extended by adding fields.
func Decode(t Type, payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %s frame: %v", ErrProtocol, t, err)
	}
	return nil
}
