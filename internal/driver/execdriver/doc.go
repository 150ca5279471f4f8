// Package execdriver is the exec machine driver: the operator's own
// commands start, stop and report on replica machines (a libvirt wrapper,
// a cloud CLI, a script that powers on a physical server). Standby passes
// the machine's settings in environment variables and the disks' image
// paths or NBD URIs as arguments, and reads the state from the status
// command's exit code and output. docs/drivers.md is the operator's
// contract.
package execdriver
