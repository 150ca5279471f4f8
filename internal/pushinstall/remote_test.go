package pushinstall

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/agent"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func sampleOptions() Options {
	return Options{Host: "web01.example.net", KeyFile: "/root/.ssh/id_ed25519", KnownHosts: "/root/.ssh/known_hosts",
		Binary: "/usr/local/bin/standby", ServerURL: "https://dr.example.net:9443", JoinToken: "SBJ1.sample",
		Machine: "web01", Disks: []Disk{{Name: "vda", Path: "/var/lib/images/web01.img"}}}
}

// The systemd unit is the one path the test machine cannot run (systemd
// is not PID 1 there): its text is pinned.
func TestUnitGolden(t *testing.T) {
	o, err := sampleOptions().withDefaults(true)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "standby-agent-web01.service", Unit(o))
	if UnitName("web01") != "standby-agent-web01.service" {
		t.Errorf("unit name %q", UnitName("web01"))
	}
}

// The configuration written is one the agent loads and validates, in
// managed mode, with the defaults filled in.
func TestAgentConfig(t *testing.T) {
	o, err := sampleOptions().withDefaults(true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := AgentConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "agent-web01.yaml", string(b))
	p := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(p, b, 0o600)
	c, err := agent.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Control == nil || c.Control.Identity != "/opt/standby/web01/identity" || c.Listen.Unix != "/run/standby/web01.sock" ||
		c.StateDir != "/var/lib/standby/agent/web01" || len(c.Disks) != 1 || c.Disks[0].Name != "vda" {
		t.Errorf("config: %+v control %+v", c, c.Control)
	}
	// A disk name the agent refuses is refused before anything is sent.
	o.Disks = []Disk{{Name: "bad name", Path: "/x.img"}}
	if _, err := AgentConfig(o); err == nil || !strings.Contains(err.Error(), "disks[0].name") {
		t.Errorf("bad disk name: %v", err)
	}
}

func TestOptionsDefaultsAndErrors(t *testing.T) {
	o, err := sampleOptions().withDefaults(true)
	if err != nil {
		t.Fatal(err)
	}
	if o.Host != "web01.example.net:22" || o.User != "root" || o.Name != "web01" || o.Prefix != "/opt/standby" || o.Heartbeat != "10s" {
		t.Errorf("defaults: %+v", o)
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	_, err = Options{Prefix: "relative", HostKeyFingerprint: "MD5:aa", ServerURL: "http://x", Machine: "a b",
		Disks: []Disk{{Name: "vda", Path: "rel.img"}}, Status: "nope"}.withDefaults(true)
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"host: required", "auth:", "fingerprint", "server:", "join token", "machine:", "disks[0]", "prefix:", "status:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not list %q:\n%v", want, err)
		}
	}
	if _, err := ParseDisk("vda"); err == nil {
		t.Error("ParseDisk accepted vda")
	}
	if d, err := ParseDisk("vda=/a=b.img"); err != nil || d != (Disk{Name: "vda", Path: "/a=b.img"}) {
		t.Errorf("ParseDisk: %+v %v", d, err)
	}
}

func TestArchMatches(t *testing.T) {
	for _, tc := range []struct {
		uname string
		ms    []string
		want  bool
	}{
		{"Linux x86_64", unameMachines[62], true},
		{"Linux aarch64", unameMachines[62], false},
		{"Darwin x86_64", unameMachines[62], false},
		{"Linux aarch64", unameMachines[183], true},
		{"", unameMachines[62], false},
	} {
		if got := archMatches(tc.uname, tc.ms); got != tc.want {
			t.Errorf("archMatches(%q, %v) = %v", tc.uname, tc.ms, got)
		}
	}
}

func TestShellQuote(t *testing.T) {
	if got := shq(`it's "x" $HOME`); got != `'it'\''s "x" $HOME'` {
		t.Errorf("shq: %s", got)
	}
}
