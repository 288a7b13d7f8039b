package protocol

import "github.com/twmb/franz-go/pkg/kmsg"

// ApiVersionsKey is the API key of ApiVersions, whose response header is
// always version 0 even when the request is flexible (KIP-511).
const ApiVersionsKey = 18

// maxKnownKey bounds the tables below; kmsg's keys stay well under it.
const maxKnownKey = 256

// versionTable caches, per API key, the highest version kmsg can encode and
// decode and the first flexible version, so the hot path asks an array
// instead of allocating a kmsg message.
type versionTable struct {
	max           [maxKnownKey]int16 // -1: kmsg does not know the key
	firstFlexible [maxKnownKey]int16 // -1: never flexible up to max
}

var versions = buildVersionTable()

func buildVersionTable() *versionTable {
	t := new(versionTable)
	for k := range maxKnownKey {
		t.max[k], t.firstFlexible[k] = -1, -1
		req := kmsg.RequestForKey(int16(k))
		if req == nil {
			continue
		}
		t.max[k] = req.MaxVersion()
		for v := int16(0); v <= t.max[k]; v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				t.firstFlexible[k] = v
				break
			}
		}
	}
	return t
}

// MaxVersion returns the highest version of key that kmsg (and so pipemesh)
// can decode, and false when kmsg does not know the key at all.
func MaxVersion(key int16) (int16, bool) {
	if key < 0 || int(key) >= maxKnownKey || versions.max[key] < 0 {
		return -1, false
	}
	return versions.max[key], true
}

// Known reports whether kmsg can decode version v of key.
func Known(key, v int16) bool {
	max, ok := MaxVersion(key)
	return ok && v >= 0 && v <= max
}

// IsFlexible reports whether version v of key uses compact encodings and
// tagged fields (KIP-482). It is meaningful only when Known(key, v).
func IsFlexible(key, v int16) bool {
	if !Known(key, v) {
		return false
	}
	f := versions.firstFlexible[key]
	return f >= 0 && v >= f
}

// FlexibleResponseHeader reports whether the response to version v of key
// has a response header v1 (with a tagged-field section). ApiVersions never
// does, so that a client can read the error of a too-new request.
func FlexibleResponseHeader(key, v int16) bool {
	return key != ApiVersionsKey && IsFlexible(key, v)
}
