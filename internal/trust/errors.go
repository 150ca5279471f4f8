package trust

import "errors"

// Errors of this package, wrapped with context; callers test them with
// errors.Is. The join and renew endpoints send each one as a code
// (errorCodes), so a client's error matches the same sentinel as the
// server's.
var (
	// ErrMalformed: input that does not parse (a token, a CSR, JSON, a
	// host name); the message says what was wrong.
	ErrMalformed = errors.New("malformed")
	// ErrBadToken: a join token this server did not issue (unknown secret,
	// altered id, or a pin of another CA).
	ErrBadToken = errors.New("join token not valid here")
	// ErrTokenExpired, ErrTokenUsed: a join token expired, or was used
	// before (tokens are one-time).
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenUsed    = errors.New("join token already used")
	// ErrWrongRole: a certificate or token of another role than the one
	// accepted.
	ErrWrongRole = errors.New("wrong role")
	// ErrWrongPeer: a certificate of the right role but not of the server
	// the caller meant to reach.
	ErrWrongPeer = errors.New("wrong peer")
	// ErrWrongCA: a certificate that does not chain to this deployment's
	// CA, or a CA that does not match a token's pin.
	ErrWrongCA = errors.New("signed by another CA")
	// ErrRevoked: the certificate's server was revoked.
	ErrRevoked = errors.New("revoked")
	// ErrNoCert: a call that needs a client certificate came without one.
	ErrNoCert = errors.New("no client certificate")
	// ErrNoIdentity: a certificate without a well-formed standby identity.
	ErrNoIdentity = errors.New("no standby identity")
	// ErrCertInvalid: a certificate that chains to the CA but is not valid
	// now (expired, not yet valid) or not for this use.
	ErrCertInvalid = errors.New("certificate not valid")
	// ErrExists: a server with that name and role is registered already.
	ErrExists = errors.New("already registered")
	// ErrNotJoined: a directory holds no identity (join first), or a server
	// that is not (or no longer) registered.
	ErrNotJoined = errors.New("not joined")
)

// errorCodes names each sentinel on the wire (JSON "code"), with the HTTP
// status the endpoints answer it with. The order matters only for errors
// that wrap two sentinels: the first match wins.
var errorCodes = []struct {
	err    error
	code   string
	status int
}{
	{ErrMalformed, "malformed", 400},
	{ErrBadToken, "bad_token", 401},
	{ErrTokenExpired, "token_expired", 401},
	{ErrTokenUsed, "token_used", 409},
	{ErrWrongRole, "wrong_role", 403},
	{ErrWrongPeer, "wrong_peer", 403},
	{ErrWrongCA, "wrong_ca", 401},
	{ErrRevoked, "revoked", 403},
	{ErrNoCert, "no_cert", 401},
	{ErrNoIdentity, "no_identity", 401},
	{ErrCertInvalid, "cert_invalid", 401},
	{ErrExists, "exists", 409},
	{ErrNotJoined, "not_joined", 403},
}

// classify returns the wire code and HTTP status of err; errors that are
// not the caller's fault are 500 "internal".
func classify(err error) (code string, status int) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return "internal", 500
}

// sentinelOf is the sentinel named by a wire code, or nil.
func sentinelOf(code string) error {
	for _, c := range errorCodes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
