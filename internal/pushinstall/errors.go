package pushinstall

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUnknownHostKey: the host presented a key that neither the
	// pinned fingerprint nor known_hosts names. *HostKeyError says which.
	ErrUnknownHostKey = errors.New("unknown host key")
	// ErrHostKeyMismatch: known_hosts names another key for this host
	// (a changed key, or a machine in the middle).
	ErrHostKeyMismatch = errors.New("host key does not match")
	// ErrArchMismatch: the binary is not built for the host's OS/arch.
	ErrArchMismatch = errors.New("binary does not match the host")
	// ErrNotJoined: the configuration server did not list the agent (or
	// its machine) in time.
	ErrNotJoined = errors.New("agent did not join in time")
)

// HostKeyError is a refused host key, with its fingerprint so that the
// operator can check it out of band and accept it.
type HostKeyError struct {
	Host        string // host:port
	KeyType     string // e.g. ssh-ed25519
	Fingerprint string // SHA256:...
	Err         error  // ErrUnknownHostKey or ErrHostKeyMismatch
	KnownHosts  string // the file that was consulted, if any
}

func (e *HostKeyError) Error() string {
	if errors.Is(e.Err, ErrHostKeyMismatch) {
		return fmt.Sprintf("%s presents %s key %s, which %s does not list for it: the host was reinstalled or someone is in the middle; check the key on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and fix %s before trying again: %v",
			e.Host, e.KeyType, e.Fingerprint, e.KnownHosts, e.KnownHosts, e.Err)
	}
	return fmt.Sprintf("%s presents %s key %s, which is not known: check it on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then accept it with --host-key-fingerprint %s or add it to known_hosts (ssh-keyscan, or one ssh login): %v",
		e.Host, e.KeyType, e.Fingerprint, e.Fingerprint, e.Err)
}

func (e *HostKeyError) Unwrap() error { return e.Err }

// StepError is a failed step: which one, what went wrong, and what to
// check.
type StepError struct {
	Step string
	Err  error
	Hint string
}

func (e *StepError) Error() string {
	s := fmt.Sprintf("push install, step %s: %v", e.Step, e.Err)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *StepError) Unwrap() error { return e.Err }

func stepErr(step string, err error, hint string, a ...any) error {
	return &StepError{Step: step, Err: err, Hint: fmt.Sprintf(hint, a...)}
}
