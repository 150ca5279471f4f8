// Package all builds the registry of every machine driver Standby has,
// explicitly (no driver registers itself in init): the one place a role
// learns which drivers exist.
package all

import (
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/execdriver"
	"github.com/standby-dr/standby/internal/driver/qemu"
)

// Registry returns a registry with exec and qemu.
func Registry() *driver.Registry {
	r := driver.NewRegistry()
	for name, f := range map[string]driver.Factory{
		"exec": execdriver.Factory,
		"qemu": qemu.Factory,
	} {
		if err := r.Register(name, f); err != nil {
			panic(err) // a programming error: the names above are fixed
		}
	}
	return r
}
