// Package migrate reads a backend's schema migrations from embedded files
// and decides which of them a database still needs. Applying them is the
// backend's job (each has its own transactions and locks); the rules are
// shared:
//
//   - a migration is a file NNNN_name.sql; numbers start at 1 and have no
//     gaps, so version N means "migrations 1..N applied";
//   - migrations are never edited once released, only added;
//   - a database whose version is higher than the newest migration this
//     binary knows was migrated by a newer Standby: Open refuses it with
//     store.ErrSchemaTooNew rather than run against a schema it does not
//     understand.
package migrate
