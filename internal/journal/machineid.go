package journal

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrMachineIDText is wrapped by ParseMachineID's errors.
var ErrMachineIDText = errors.New("not a 128-bit hex machine id")

// ParseMachineID reads a machine id as text: 32 hex digits, in either case,
// dashes anywhere ignored. Only hex digits and dashes are accepted, so an
// id that parses can never name a path outside a directory.
func ParseMachineID(s string) ([16]byte, error) {
	var id [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%q is %w", s, ErrMachineIDText)
	}
	copy(id[:], b)
	return id, nil
}

// FormatMachineID writes a machine id in its one canonical form: lowercase
// hex, dashed as a UUID (8-4-4-4-12).
func FormatMachineID(id [16]byte) string {
	h := hex.EncodeToString(id[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
