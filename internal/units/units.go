// Package units reads and writes the sizes and rates of configuration
// files: 512KiB, 64MiB, 1GiB, and 50MiB/s.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize reads a size like 512KiB, 64MiB, 1GiB or a plain byte count.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size like 512KiB, 64MiB or 1GiB", s)
	}
	return n * mult, nil
}

// FormatSize writes a size the way ParseSize reads it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParseRate reads a rate like 50MiB/s; "off" or "0" is 0 (no limit).
func ParseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" || s == "" {
		return 0, nil
	}
	if !strings.HasSuffix(s, "/s") {
		return 0, fmt.Errorf("%q is not a rate like 50MiB/s, or off", s)
	}
	n, err := ParseSize(strings.TrimSuffix(s, "/s"))
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate like 50MiB/s, or off", s)
	}
	return n, nil
}
