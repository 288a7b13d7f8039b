package protocol

import "github.com/twmb/franz-go/pkg/kmsg"

// keyNames holds kmsg's names so that logs and metric labels need no
// allocation per request.
var keyNames = func() (names [maxKnownKey]string) {
	for k := range maxKnownKey {
		if kmsg.RequestForKey(int16(k)) != nil {
			names[k] = kmsg.NameForKey(int16(k))
		}
	}
	return names
}()
