//go:build race

package twosite

// raceEnabled: the race detector slows CPU-bound code (zstd) a hundredfold.
const raceEnabled = true
