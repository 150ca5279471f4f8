package nbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors.
var (
	// ErrServerClosed is returned by Serve when it is called after Close.
	ErrServerClosed = errors.New("nbd: server closed")
	// ErrClientClosed is returned by Client methods called after Close.
	ErrClientClosed = errors.New("nbd: client closed")
	// ErrProtocol marks a peer that broke the protocol; the connection is unusable.
	ErrProtocol = errors.New("nbd: protocol violation")
)

// OptionError is a negative answer from the server during option haggling.
type OptionError struct {
	Option  string // e.g. "GO"
	Reply   string // e.g. "ERR_UNKNOWN"
	Message string // the server's human-readable message, if any
	code    uint32
}

func (e *OptionError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("nbd option %s: %s: %s", e.Option, e.Reply, e.Message)
	}
	return fmt.Sprintf("nbd option %s: %s", e.Option, e.Reply)
}

// RequestError is an error reply to a transmission request. errors.Is
// matches it against the syscall.Errno it carries (syscall.ENOSPC, ...).
type RequestError struct {
	Op      string // NBD command, e.g. "WRITE"
	Offset  int64
	Length  int64
	Errno   syscall.Errno
	Message string // from a structured error chunk, if any
}

func (e *RequestError) Error() string {
	s := fmt.Sprintf("nbd %s at %d+%d: %v", e.Op, e.Offset, e.Length, e.Errno)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *RequestError) Unwrap() error { return e.Errno }

// protocolError wraps ErrProtocol with what was seen.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// errnoOf maps a Backend error to an NBD error value (§Error values).
// syscall.Errno values the protocol knows pass through; EDQUOT and EFBIG
// become ENOSPC as the spec asks; a cancelled context means the server is
// shutting down; anything else is EIO.
func errnoOf(err error) uint32 {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EPERM, syscall.EACCES, syscall.EROFS:
			return errPerm
		case syscall.EIO:
			return errIO
		case syscall.ENOMEM:
			return errNoMem
		case syscall.EINVAL:
			return errInval
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return errNoSpc
		case syscall.EOVERFLOW:
			return errOverflow
		case syscall.ENOTSUP:
			return errNotSup
		case syscall.ESHUTDOWN:
			return errShutdown
		}
		return errIO
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errShutdown
	}
	return errIO
}

// errnoFromWire maps an NBD error value to the syscall.Errno a Go caller
// can match. Unknown values are treated as EINVAL, as the spec tells clients
// to do (§Error values).
func errnoFromWire(v uint32) syscall.Errno {
	switch v {
	case errPerm:
		return syscall.EPERM
	case errIO:
		return syscall.EIO
	case errNoMem:
		return syscall.ENOMEM
	case errInval:
		return syscall.EINVAL
	case errNoSpc:
		return syscall.ENOSPC
	case errOverflow:
		return syscall.EOVERFLOW
	case errNotSup:
		return syscall.ENOTSUP
	case errShutdown:
		return syscall.ESHUTDOWN
	}
	return syscall.EINVAL
}
