package all

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/standby-dr/standby/internal/driver"
)

func TestRegistry(t *testing.T) {
	r := Registry()
	if got, want := r.Names(), []string{"exec", "qemu"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	d, err := r.New(driver.Config{Name: "qemu", Settings: map[string]any{"state_dir": t.TempDir()}}, driver.Deps{})
	if err != nil || d == nil {
		t.Fatalf("New(qemu) = %v, %v", d, err)
	}
	if _, err := r.New(driver.Config{Name: "exec"}, driver.Deps{}); !errors.Is(err, driver.ErrInvalid) {
		t.Errorf("New(exec) without commands: %v, want ErrInvalid", err)
	}
}

// TestSamples decodes the sample configurations the way a role reads its
// YAML file: the samples build a driver, the invalid ones fail with the
// setting named.
func TestSamples(t *testing.T) {
	for file, want := range map[string]string{
		"qemu.sample.yaml":            "",
		"exec.sample.yaml":            "",
		"invalid.exec-no-status.yaml": "status: a command is needed",
		"invalid.qemu-misspelt.yaml":  `unknown field "stop_timout"`,
		"invalid.unknown-driver.yaml": `"vmware" is not one of exec, qemu`,
	} {
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Driver driver.Config `yaml:"driver"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// The state directory is created by New: point it somewhere
		// writable.
		if _, ok := c.Driver.Settings["state_dir"]; ok {
			c.Driver.Settings["state_dir"] = t.TempDir()
		}
		_, err = Registry().New(c.Driver, driver.Deps{})
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", file, err)
		case want != "" && (!errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: error %v, want ErrInvalid mentioning %q", file, err, want)
		}
	}
}
