package all

import (
	"errors"
	"slices"
	"testing"

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
