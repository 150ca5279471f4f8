// Package pgtest gives tests a real PostgreSQL: a new, empty database per
// test, dropped at its end.
//
// Where the server comes from:
//
//   - $STANDBY_TEST_POSTGRES set (a DSN, URL or key=value form, of a role
//     that may CREATE DATABASE): that server;
//   - otherwise a throwaway cluster this test binary starts on first use
//     from Debian's binaries (/usr/lib/postgresql/<version>/bin): initdb
//     into a temporary directory, postgres listening on a unix socket in
//     it and on no TCP port, fsync off. As root, both run as the
//     `postgres` system user (initdb refuses root). Main stops the cluster
//     and removes the directory when the tests end.
//
// Without the binaries a test is skipped, saying what to install; in CI
// ($CI=true) it fails instead, so that missing coverage is not mistaken for
// success. A package using DSN must call Main from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
package pgtest
