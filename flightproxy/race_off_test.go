//go:build !race

package flightproxy

const raceEnabled = false
