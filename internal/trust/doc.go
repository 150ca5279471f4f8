// Package trust is Standby's internal PKI: the configuration server's CA,
// the identities its certificates carry, the checks every mutual-TLS
// connection makes, one-time join tokens, joining, renewal and
// revocation. docs/trust.md describes the formats and flows.
//
// Nouns:
//
//	CA            the deployment's certificate authority (ECDSA P-256,
//	              ca.crt/ca.key in the server's directory)
//	pin           "sha256:" + hex SHA-256 of the CA's SubjectPublicKeyInfo
//	identity      role and server ID, carried as the URI SAN
//	              standby://<role>/<id>; role "server" is the
//	              configuration server itself
//	join token    SBJ1.<role>.<id>.<secret>.<pin>: one-time, expiring;
//	              the store keeps only the secret's SHA-256
//	Registrar     the server side of POST /v1/join and POST /v1/renew
//	Verifier      chain to the CA + identity + role + not revoked; what
//	              every listener and dialler runs (ServerTLS, ClientTLS,
//	              ListenerTLS) and every handler re-runs (Require)
//	Revocations   revoked serials and identities a role knows, from the
//	              CA's CRL (GET /v1/crl) or GET /v1/revoked
//
// The flow, in one picture:
//
//	operator            joiner (agent, process, target)        configuration server
//	standby token create ─────── token (out of band) ──▶
//	                    parse token, new key + CSR
//	                    TLS, trusting only the pinned CA ───▶ ListenerTLS (no client cert)
//	                    POST /v1/join {token, role, name, csr} ─▶ Registrar.Join:
//	                                                          pin, role, CSR, name free,
//	                                                          consume token (store, atomic),
//	                                                          sign, store Server
//	                    ◀── {server_id, cert, ca} ──────────
//	                    write tls.key (0600), tls.crt, ca.crt
//	                    ... later, a third of the validity left:
//	                    mTLS POST /v1/renew {csr} ─────────▶ Require + Registrar.Renew
//	                    ◀── {cert, ca}; install (.next, rename)
//
// This package does I/O (files, HTTP) by nature; the pure parts (token
// parsing, identity, checks of CSRs) take their clock and inputs as
// arguments.
package trust
