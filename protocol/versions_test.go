package protocol

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestVersionsMatchKmsg(t *testing.T) {
	known := 0
	for k := -2; k < maxKnownKey+2; k++ {
		key := int16(k)
		req := kmsg.RequestForKey(key)
		max, ok := MaxVersion(key)
		if req == nil {
			assert.False(t, ok, "key %d is unknown to kmsg", key)
			assert.Equal(t, int16(-1), max)
			for _, v := range []int16{-1, 0, 1, 100} {
				assert.False(t, Known(key, v))
				assert.False(t, IsFlexible(key, v))
				assert.False(t, FlexibleResponseHeader(key, v))
			}
			continue
		}
		known++
		require.True(t, ok, "%s", kmsg.NameForKey(key))
		require.Equal(t, req.MaxVersion(), max, "%s", kmsg.NameForKey(key))
		for v := int16(-1); v <= max+2; v++ {
			name := kmsg.NameForKey(key)
			if v < 0 || v > max {
				assert.False(t, Known(key, v), "%s v%d", name, v)
				assert.False(t, IsFlexible(key, v), "%s v%d: unknown versions are not flexible", name, v)
				continue
			}
			assert.True(t, Known(key, v), "%s v%d", name, v)
			r := kmsg.RequestForKey(key)
			r.SetVersion(v)
			assert.Equal(t, r.IsFlexible(), IsFlexible(key, v), "%s v%d", name, v)
			resp := r.ResponseKind()
			resp.SetVersion(v)
			assert.Equal(t, resp.IsFlexible(), IsFlexible(key, v), "%s v%d: the response is flexible with the request", name, v)
			if key == ApiVersionsKey {
				assert.False(t, FlexibleResponseHeader(key, v), "ApiVersions v%d: the response header is always v0 (KIP-511)", v)
			} else {
				assert.Equal(t, r.IsFlexible(), FlexibleResponseHeader(key, v), "%s v%d", name, v)
			}
		}
	}
	assert.Greater(t, known, 60, "kmsg knows most keys")
}

func TestFlexibleVersionsAreAStraightRange(t *testing.T) {
	// versionTable records only the first flexible version; that is enough
	// only if no key stops being flexible at a later version.
	for k := range int16(maxKnownKey) {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		flexible := false
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			if flexible {
				require.True(t, req.IsFlexible(), "%s v%d is not flexible though an earlier version was", kmsg.NameForKey(k), v)
			}
			flexible = req.IsFlexible()
		}
	}
}

func TestVersionLookupsDoNotAllocate(t *testing.T) {
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		_, _ = MaxVersion(1)
		_ = IsFlexible(1, 12)
		_ = FlexibleResponseHeader(18, 3)
	}))
}
