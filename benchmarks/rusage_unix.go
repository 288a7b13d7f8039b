//go:build unix

package benchmarks

import (
	"syscall"
	"time"
)

// rusageSelf is the user and system CPU time of this process.
func rusageSelf() (user, system time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), true
}
