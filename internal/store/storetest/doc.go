// Package storetest is the conformance suite of store.Store: every
// implementation runs it, and passes it, so that the control plane can use
// either without knowing which (restic's backend test suite is the model).
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return mustOpen(t) },
//			storetest.WithReopen(func(t *testing.T) func() store.Store { ... }))
//	}
//
// Each test gets a new, empty store from the opener and closes it at its
// end; the opener may register its own cleanups (a consistency check, the
// removal of a database), which run after the suite closed the store.
//
// The suite computes what it expects itself (UTC, microseconds, nil and
// empty slices kept apart) rather than asking the implementation's
// helpers, so that it catches a mistake shared by both backends.
package storetest
