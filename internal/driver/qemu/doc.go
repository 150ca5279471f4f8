// Package qemu is the qemu machine driver: each replica machine is a
// qemu-system-x86_64 process (TCG by default; KVM where the host has it)
// over the machine's disks, which are image files or the master target's
// NBD exports.
//
//	Start ──▶ qemu-system-x86_64 -daemonize ... ──▶ <state dir>/<machine>/
//	                                                   pid         qemu's pid file
//	                                                   qmp.sock    QMP: status, powerdown, quit
//	                                                   serial.log  the guest's serial console
//	                                                   serial.log.prev  the previous boot's
//
// The process is daemonized so that a replica machine outlives a restart
// of the master target; the handle is the machine's name and everything
// the driver needs later is in its state directory. Status asks QMP and
// falls back to the process (pid plus its command line, so that a reused
// pid is not taken for the machine). Stop asks the guest to power down
// (ACPI), waits the stop timeout, then quits qemu, then kills it.
//
// Network mapping (Machine.Network.Settings): mode none, user, tap or
// bridge; bridge, tap, mac and model. An isolated machine (test failover)
// gets a user-mode NIC with restrict=on whatever the mode: it has its
// interface and its IP settings but no path out. IP settings reach the
// guest on the kernel command line (ip=, direct kernel boot) and in the
// firmware configuration file opt/standby/ip (KEY=VALUE lines).
package qemu
