// Package driver is the machine-driver interface: how a master target
// creates, starts, stops and watches the replica machine of a protected
// machine after a failover (or a test failover), over the disks that the
// master target exports.
//
//	control plane ──failover job──▶ master target ──export──▶ disk (file or NBD URI)
//	                                     │
//	                                     └──Driver.Start(Machine{Disks, Network, IP})──▶ replica machine
//
// The package is pure: the types, their validation, the settings decoder
// and an explicit registry of drivers by name. Implementations live in
// subpackages (execdriver, qemu); only cmd/ (or the all package, which
// builds a registry of every driver explicitly) chooses them. drivertest
// holds the conformance suite every driver runs.
//
// Nouns:
//
//	machine     what to run: name, disks, CPUs, memory, network, IP settings
//	disk        one disk: an image path or an NBD URI (a master target export)
//	handle      the driver's identifier of a started machine (Start returns it)
//	network     the network mapping: isolated for a test failover, or
//	            driver-specific settings (bridge, tap, MAC, model)
//	IP settings what the guest is told about its address (kernel command
//	            line, environment, firmware config)
//	state       running, stopped or unknown, with the driver's details
package driver
