// Package config reads the roles' YAML configuration files the one way
// they are all read: over the defaults the caller filled in, with unknown
// fields refused (a misspelt setting is an error, not a silent default).
package config

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// Load decodes the YAML file at path into dst, which holds the defaults.
func Load(path string, dst any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// CheckLogLevel checks a log_level setting.
func CheckLogLevel(s string) error {
	switch s {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", s)
}
