package wire

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/standby-dr/standby/internal/journal"
)

// Sentinel errors.
var (
	// ErrProtocol is a peer that does not follow the protocol: a frame out
	// of place, too large, or undecodable. Permanent for the connection.
	ErrProtocol = errors.New("wire: protocol violation")
	// ErrVersion is a handshake with no common version.
	ErrVersion = errors.New("wire: no common protocol version")
	// ErrPeerRole is a peer whose role (claimed, or named by its
	// certificate) is not the one expected. Permanent.
	ErrPeerRole = errors.New("wire: peer role")
	// ErrClosed is a use of a closed connection.
	ErrClosed = errors.New("wire: connection closed")
)

// Error codes carried in Error frames.
const (
	CodeInternal    = "internal"    // the server failed; transient unless said otherwise
	CodeBusy        = "busy"        // the server cannot do it now (a rebase before the drain); transient
	CodeUnavailable = "unavailable" // a downstream role cannot be reached; transient
	CodeFenced      = "fenced"      // the segment's epoch is older than the replica's: stop shipping
	CodeGap         = "gap"         // the segment does not continue from the server's position: resync
	CodeFork        = "fork"        // the segment's chain differs from the server's: resync
	CodeBadRequest  = "bad-request" // the request is malformed or names an unknown machine
	CodeVersion     = "version"     // no common protocol version
	CodeDenied      = "denied"      // the peer's identity or role is not allowed
)

// Error is the payload of an Error frame, and the error a peer's Error frame
// becomes on this side.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Transient bool   `json:"transient"`
	// Pos is the server's position, for gap and fork errors: the evidence
	// the client needs to resynchronise.
	Pos *journal.Pos `json:"pos,omitempty"`
}

func (e *Error) Error() string {
	if e.Transient {
		return fmt.Sprintf("peer: %s (%s, transient)", e.Message, e.Code)
	}
	return fmt.Sprintf("peer: %s (%s)", e.Message, e.Code)
}

// IsTransient reports whether err is worth retrying: a peer's transient
// Error, or a network failure (the connection dropped, a timeout, a refused
// dial). Protocol violations, version mismatches and permanent peer errors
// are not.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var we *Error
	if errors.As(err, &we) {
		return we.Transient
	}
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrVersion) || errors.Is(err, ErrPeerRole) {
		return false
	}
	// A certificate refused, by the peer (an alert) or here: retrying will
	// not make it valid.
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &alert) || errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &host) || errors.As(err, &verify) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, ErrClosed) || isEOF(err)
}

// HasCode reports whether err is a peer Error with the given code.
func HasCode(err error, code string) bool {
	var we *Error
	return errors.As(err, &we) && we.Code == code
}

// PosError turns a continuity failure into the Error frame that tells the
// client to resynchronise: a gap, or a fork (an overlap that does not match
// is a fork too). pos is the server's position, the evidence.
func PosError(err error, pos journal.Pos) *Error {
	var pm *journal.PosMismatchError
	if !errors.As(err, &pm) {
		return nil
	}
	code := CodeFork
	if pm.Gap() {
		code = CodeGap
	}
	return &Error{Code: code, Message: err.Error(), Pos: &pos}
}
