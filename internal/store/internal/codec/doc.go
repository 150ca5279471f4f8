// Package codec holds what both store backends must do identically: the
// normal form of times (UTC, microseconds), of the values that come back
// from the store, and the validation of what goes in. Keeping it in one
// place is what makes the two backends pass one conformance suite with the
// same errors.
package codec
