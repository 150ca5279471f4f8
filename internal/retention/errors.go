package retention

import (
	"errors"
	"fmt"
)

// ErrInvalidPolicy is wrapped by every error Policy.Validate returns, so a
// caller can tell a bad policy from other configuration errors with
// errors.Is. It is permanent: the same policy always gives the same error.
var ErrInvalidPolicy = errors.New("retention: invalid policy")

// FieldError reports one invalid Policy field: its name, the value it had
// and the values it may take. It wraps ErrInvalidPolicy.
type FieldError struct {
	Field   string // Policy field name, e.g. "Hourly"
	Value   string // the rejected value, as the operator wrote it
	Allowed string // the allowed values, in words
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("retention policy: %s = %s: allowed: %s", e.Field, e.Value, e.Allowed)
}

// Unwrap makes errors.Is(err, ErrInvalidPolicy) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidPolicy }
