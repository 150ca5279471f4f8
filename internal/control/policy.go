package control

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

// The defaults of a protection group's policy. This is the only place
// they live; DefaultPolicy returns them.
const (
	// DefaultPointInterval: a crash-consistent point every 10 s.
	DefaultPointInterval = 10 * time.Second
	// DefaultAppInterval: an app-consistent point every hour (a machine
	// with nothing to quiesce still gets a consistent point, cheaply).
	DefaultAppInterval = time.Hour
	// DefaultRPOThreshold: warn when the achieved RPO exceeds 30 s.
	DefaultRPOThreshold = 30 * time.Second
	// DefaultCompression: the process server picks its level.
	DefaultCompression = "auto"

	// MinPointInterval is the smallest crash-consistent interval.
	MinPointInterval = time.Second
)

// Compressions lists the compression settings a policy may name: auto
// (the process server's choice), off, then zstd levels from fastest to
// best. The process server calls "off" "none".
var Compressions = []string{"auto", "off", "fastest", "standard", "better", "best"}

// DefaultPolicy returns the policy of a new protection group: points
// every 10 s, app-consistent points hourly, retention.Defaults(), an RPO
// threshold of 30 s, automatic compression, no bandwidth limit, initial
// replication at once.
func DefaultPolicy() Policy {
	return Policy{
		PointInterval: Duration(DefaultPointInterval),
		AppInterval:   Duration(DefaultAppInterval),
		Retention:     retention.Defaults(),
		RPOThreshold:  Duration(DefaultRPOThreshold),
		Compression:   DefaultCompression,
	}
}

// ErrInvalidPolicy is wrapped by every error Policy.Validate returns (the
// retention part wraps retention.ErrInvalidPolicy as well). It is
// permanent.
var ErrInvalidPolicy = errors.New("invalid replication policy")

// PolicyFieldError reports one invalid Policy field by its JSON name, the
// value it had and the values it may take. It wraps ErrInvalidPolicy.
type PolicyFieldError struct {
	Field   string // JSON name, e.g. "point_interval"
	Value   string
	Allowed string
}

func (e *PolicyFieldError) Error() string {
	return fmt.Sprintf("replication policy: %s = %s: allowed: %s", e.Field, e.Value, e.Allowed)
}

// Unwrap makes errors.Is(err, ErrInvalidPolicy) hold.
func (e *PolicyFieldError) Unwrap() error { return ErrInvalidPolicy }

// Validate reports every invalid field, each as a *PolicyFieldError (or,
// for the retention, the errors of retention.Policy.Validate, which also
// wrap ErrInvalidPolicy here), joined with errors.Join; nil when the
// policy is valid.
func (p Policy) Validate() error {
	var errs []error
	bad := func(field, value, allowed string) {
		errs = append(errs, &PolicyFieldError{Field: field, Value: value, Allowed: allowed})
	}
	if p.PointInterval.D() < MinPointInterval {
		bad("point_interval", p.PointInterval.String(), "at least "+MinPointInterval.String())
	}
	if a := p.AppInterval.D(); a != 0 && (a < 0 || a < p.PointInterval.D()) {
		bad("app_interval", p.AppInterval.String(),
			fmt.Sprintf("0 (off) or at least the point interval (%s)", p.PointInterval))
	}
	if err := p.Retention.Validate(); err != nil {
		// One error per retention field, like the others.
		parts := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			parts = j.Unwrap()
		}
		for _, e := range parts {
			errs = append(errs, retentionError{e})
		}
	}
	if p.RPOThreshold.D() <= 0 {
		bad("rpo_threshold", p.RPOThreshold.String(), "a positive duration such as 30s")
	}
	if !slices.Contains(Compressions, p.Compression) {
		bad("compression", strconv.Quote(p.Compression), strings.Join(Compressions, ", "))
	}
	if p.BandwidthLimit < 0 {
		bad("bandwidth_limit", strconv.FormatInt(p.BandwidthLimit, 10), "0 (no limit) or bytes per second")
	}
	return errors.Join(errs...)
}

// retentionError is an invalid retention field inside a policy: it wraps
// both ErrInvalidPolicy and the retention error.
type retentionError struct{ err error }

func (e retentionError) Error() string   { return "replication policy: " + e.err.Error() }
func (e retentionError) Unwrap() []error { return []error{ErrInvalidPolicy, e.err} }
