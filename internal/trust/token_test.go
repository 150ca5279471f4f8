package trust

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

func TestJoinTokenRoundTrip(t *testing.T) {
	pin := "sha256:" + strings.Repeat("0f", 32)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s, tok, err := NewJoinToken(control.RoleTarget, time.Hour, "user:alice", pin, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseJoinToken("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.Role != control.RoleTarget || p.ID != tok.ID || p.Pin != pin || p.Hash() != tok.Hash || p.String() != s {
		t.Errorf("parsed %+v from %s, stored %+v", p, s, tok)
	}
	if strings.Contains(tok.Hash, secretEncoding.EncodeToString(p.Secret)) || len(tok.Hash) != 64 {
		t.Errorf("stored hash %q", tok.Hash)
	}
	if !tok.ExpiresAt.Equal(now.Add(time.Hour)) || tok.CreatedBy != "user:alice" || !tok.UsedAt.IsZero() {
		t.Errorf("token record %+v", tok)
	}
	s2, _, _ := NewJoinToken(control.RoleTarget, time.Hour, "user:alice", pin, now)
	if s2 == s {
		t.Error("two tokens are equal")
	}
}

func TestNewJoinTokenBounds(t *testing.T) {
	pin := "sha256:" + strings.Repeat("0f", 32)
	for _, tc := range []struct {
		role control.Role
		ttl  time.Duration
		pin  string
		text string
	}{
		{control.RoleAgent, 30 * time.Second, pin, "ttl"},
		{control.RoleAgent, 31 * 24 * time.Hour, pin, "ttl"},
		{"admin", time.Hour, pin, "role"},
		{RoleServer, time.Hour, pin, "role"},
		{control.RoleAgent, time.Hour, "md5:00", "pin"},
	} {
		if _, _, err := NewJoinToken(tc.role, tc.ttl, "u", tc.pin, time.Now()); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("NewJoinToken(%s, %v, %s): %v, want an error about %s", tc.role, tc.ttl, tc.pin, err, tc.text)
		}
	}
	for _, ttl := range []time.Duration{MinTokenTTL, MaxTokenTTL} {
		if _, _, err := NewJoinToken(control.RoleAgent, ttl, "u", pin, time.Now()); err != nil {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
}

func TestParseJoinTokenMalformed(t *testing.T) {
	s, _, _ := NewJoinToken(control.RoleAgent, time.Hour, "u", "sha256:"+strings.Repeat("ab", 32), time.Now())
	f := strings.Split(s, ".")
	join := func(g ...string) string { return strings.Join(g, ".") }
	for _, tc := range []struct {
		name, in, text string
	}{
		{"empty", "", "empty"},
		{"other prefix", "ghp_abcdef", "does not start with SBJ1"},
		{"newer version", "SBJ9" + s[4:], "not supported"},
		{"four fields", join(f[0], f[1], f[2], f[3]), "4 dot-separated fields"},
		{"bad role", join(f[0], "admin", f[2], f[3], f[4]), "role"},
		{"short id", join(f[0], f[1], "abc", f[3], f[4]), "id"},
		{"upper id", join(f[0], f[1], strings.ToUpper(f[2]), f[3], f[4]), "id"},
		{"short secret", join(f[0], f[1], f[2], f[3][:10], f[4]), "secret"},
		{"padded secret", join(f[0], f[1], f[2], f[3]+"=", f[4]), "secret"},
		{"bad pin", join(f[0], f[1], f[2], f[3], "sha256:xyz"), "pin"},
	} {
		_, err := ParseJoinToken(tc.in)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want ErrMalformed about %q", tc.name, err, tc.text)
		}
	}
}
