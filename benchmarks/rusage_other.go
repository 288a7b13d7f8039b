//go:build !unix

package benchmarks

import "time"

// rusageSelf is unknown on this platform.
func rusageSelf() (user, system time.Duration, ok bool) { return 0, 0, false }
