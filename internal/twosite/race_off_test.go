//go:build !race

package twosite

const raceEnabled = false
