// Package control is the domain model of the control plane (the
// configuration server): sites, registered servers, protection groups and
// their policies, machines with their protection state machine and health,
// jobs, join tokens, users, the audit log and alerts. It is pure: it
// imports only the standard library and other pure packages of Standby
// (retention), and does no I/O. The store persists these types; the API
// serves them; the orchestrator runs jobs.
//
// Nouns:
//
//	site            a location (primary or secondary)
//	server          a registered agent, process server or master target
//	group           a protection group (the seed's "cloud") with a policy
//	machine         a machine an agent reported; protected when in a group
//	epoch           a machine's replication epoch, incremented by failover
//	job             a long operation with steps, progress, logs and a result
//	join token      a one-time, expiring secret that lets a server join
//	alert           a condition raised once, counted, then cleared
package control
