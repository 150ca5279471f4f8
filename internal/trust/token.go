package trust

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// A join token, as a user copies it:
//
//	SBJ1.<role>.<id>.<secret>.<pin>
//	SBJ1.agent.3f9c0a6e51d2b7c4.q2V0...43 chars....sha256:9a1f...64 hex...
//
// role is the role it lets a server join as; id names the token in lists
// (16 hex digits); secret is 32 random bytes, base64url without padding;
// pin is the CA's pin (CA.Pin), so the joiner trusts exactly that CA.
// Only the secret is a credential: the store keeps its SHA-256, and the
// role and id in the text are hints that the server checks against the
// stored token.
const (
	tokenPrefix    = "SBJ1"
	tokenIDBytes   = 8
	tokenSecretLen = 32
	// MinTokenTTL and MaxTokenTTL bound a join token's life.
	MinTokenTTL = time.Minute
	MaxTokenTTL = 30 * 24 * time.Hour
)

var secretEncoding = base64.RawURLEncoding.Strict()

// JoinTokenParts is a parsed join token.
type JoinTokenParts struct {
	Role   control.Role
	ID     string
	Secret []byte
	Pin    string
}

// Hash is what the store keeps of the token: hex SHA-256 of the secret.
func (p JoinTokenParts) Hash() string { return hashSecret(p.Secret) }

// String is the token as a user copies it.
func (p JoinTokenParts) String() string {
	return strings.Join([]string{tokenPrefix, string(p.Role), p.ID, secretEncoding.EncodeToString(p.Secret), p.Pin}, ".")
}

func hashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// NewJoinToken makes a join token for role, valid for ttl from now
// (MinTokenTTL..MaxTokenTTL), pinning the CA whose pin is caPin. It
// returns the text to hand to the joiner (shown once, never stored) and
// the record to store.
func NewJoinToken(role control.Role, ttl time.Duration, createdBy, caPin string, now time.Time) (string, control.JoinToken, error) {
	if !role.Valid() {
		return "", control.JoinToken{}, fmt.Errorf("join token: role %q: want one of %s: %w", role, rolesText(control.Roles), ErrMalformed)
	}
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return "", control.JoinToken{}, fmt.Errorf("join token: ttl %v: want %v to %v (e.g. --ttl 1h): %w", ttl, MinTokenTTL, "720h (30 days)", ErrMalformed)
	}
	if err := checkPin(caPin); err != nil {
		return "", control.JoinToken{}, fmt.Errorf("join token: %v: %w", err, ErrMalformed)
	}
	idb := make([]byte, tokenIDBytes)
	secret := make([]byte, tokenSecretLen)
	rand.Read(idb)
	rand.Read(secret)
	p := JoinTokenParts{Role: role, ID: hex.EncodeToString(idb), Secret: secret, Pin: caPin}
	tok := control.JoinToken{
		ID:        p.ID,
		Hash:      p.Hash(),
		Role:      role,
		CreatedBy: createdBy,
		CreatedAt: now.UTC(),
		ExpiresAt: now.Add(ttl).UTC(),
	}
	return p.String(), tok, nil
}

// ParseJoinToken parses a token's text (surrounding white space is
// ignored, as copying adds it). It checks the form only; whether the
// server issued it is the server's to say.
func ParseJoinToken(s string) (JoinTokenParts, error) {
	const shape = "a join token looks like SBJ1.<role>.<id>.<secret>.sha256:<hex>, as `standby token create` prints it"
	bad := func(format string, a ...any) (JoinTokenParts, error) {
		return JoinTokenParts{}, fmt.Errorf("join token: "+format+"; "+shape+": %w", append(a, ErrMalformed)...)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return bad("empty")
	}
	f := strings.Split(s, ".")
	if f[0] != tokenPrefix {
		if strings.HasPrefix(f[0], "SBJ") {
			return bad("version %q is not supported by this standby (it reads %s)", f[0], tokenPrefix)
		}
		return bad("does not start with %s.", tokenPrefix)
	}
	if len(f) != 5 {
		return bad("has %d dot-separated fields, want 5 (truncated when copied?)", len(f))
	}
	p := JoinTokenParts{Role: control.Role(f[1]), ID: f[2], Pin: f[4]}
	if !p.Role.Valid() {
		return bad("role %q is not one of %s", f[1], rolesText(control.Roles))
	}
	if b, err := hex.DecodeString(p.ID); err != nil || len(b) != tokenIDBytes || strings.ToLower(p.ID) != p.ID {
		return bad("id %q is not %d lowercase hex digits", p.ID, 2*tokenIDBytes)
	}
	secret, err := secretEncoding.DecodeString(f[3])
	if err != nil || len(secret) != tokenSecretLen {
		return bad("secret is not %d bytes of base64url", tokenSecretLen)
	}
	p.Secret = secret
	if err := checkPin(p.Pin); err != nil {
		return bad("%v", err)
	}
	return p, nil
}

// checkPin accepts "sha256:" and 64 lowercase hex digits.
func checkPin(pin string) error {
	h, ok := strings.CutPrefix(pin, "sha256:")
	if b, err := hex.DecodeString(h); !ok || err != nil || len(b) != sha256.Size || strings.ToLower(h) != h {
		return fmt.Errorf("CA pin %q is not sha256: and 64 lowercase hex digits", pin)
	}
	return nil
}

// pinsEqual compares two pins in constant time (they are not secret, but
// it costs nothing).
func pinsEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
