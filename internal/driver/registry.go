package driver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config selects a driver and gives it its settings, as a role's YAML
// file holds them:
//
//	driver:
//	  name: qemu
//	  settings:
//	    state_dir: /var/lib/standby/machines
type Config struct {
	Name     string         `yaml:"name" json:"name"`
	Settings map[string]any `yaml:"settings,omitempty" json:"settings,omitempty"`
}

// Deps are what a driver gets from the role that runs it.
type Deps struct {
	Logger *slog.Logger // nil: discard
}

// Factory builds a driver from its settings; bad settings are an error
// wrapping ErrInvalid that names the setting and what is allowed.
type Factory func(settings map[string]any, deps Deps) (Driver, error)

// Registry maps driver names to factories. It is built explicitly by the
// caller (cmd/ or the all package): no driver registers itself.
type Registry struct {
	mu sync.Mutex
	m  map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Factory{}} }

// Register adds a driver; a name used twice is an error.
func (r *Registry) Register(name string, f Factory) error {
	if err := CheckName("driver name", name); err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("driver %q: nil factory", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[name]; ok {
		return fmt.Errorf("driver %q is registered twice", name)
	}
	r.m[name] = f
	return nil
}

// Names lists the registered drivers, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := make([]string, 0, len(r.m))
	for k := range r.m {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// New builds the driver c names.
func (r *Registry) New(c Config, deps Deps) (Driver, error) {
	r.mu.Lock()
	f, ok := r.m[c.Name]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("driver.name: %w: %q is not one of %s", ErrInvalid, c.Name, strings.Join(r.Names(), ", "))
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	d, err := f(c.Settings, deps)
	if err != nil {
		return nil, fmt.Errorf("driver %s: %w", c.Name, err)
	}
	return d, nil
}

// DecodeSettings decodes settings (a map from YAML or JSON) into dst, an
// options struct with json tags. An unknown or mistyped setting is an
// error wrapping ErrInvalid: a misspelt setting never becomes a silent
// default.
func DecodeSettings(settings map[string]any, dst any) error {
	b, err := json.Marshal(settings)
	if err != nil {
		return fmt.Errorf("settings: %w: %v", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("settings: %w: %v", ErrInvalid, err)
	}
	return nil
}

// Duration is a time.Duration written as text ("30s", "2m") in settings.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 2m", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
