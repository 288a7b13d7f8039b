package kafkaproxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRateThrottle(t *testing.T) {
	r := &rate{perSec: 1000}
	now := time.Unix(100, 0).UnixNano()
	// A second's worth of burst is free.
	assert.Zero(t, r.charge(now, 1000))
	// Past it, the throttle is how long the excess takes at the rate.
	assert.Equal(t, 500*time.Millisecond, r.charge(now, 500))
	// Time pays the debt back.
	assert.Zero(t, r.charge(now+int64(600*time.Millisecond), 0))
	// One throttle is capped; the debt past the cap stays for the next.
	r2 := &rate{perSec: 1}
	assert.Equal(t, maxThrottle, r2.charge(now, 100))
	assert.Equal(t, maxThrottle, r2.charge(now+int64(maxThrottle), 0))
}

func TestQuotaResolution(t *testing.T) {
	m, err := newShapeMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	q := newQuotas([]QuotaRule{
		{Principal: "*", ProduceBytesPerSecond: 1, RequestsPerSecond: 5},
		{Principal: "User:*", ProduceBytesPerSecond: 10, FetchBytesPerSecond: 20},
		{Principal: "User:alice", ProduceBytesPerSecond: 100},
		{Principal: "User:*", Topic: "logs.", Prefixed: true, ProduceBytesPerSecond: 7},
		{Principal: "User:loader", Topic: "logs.", Prefixed: true, ProduceBytesPerSecond: 3},
		{Principal: "User:*", Topic: "logs.audit", FetchBytesPerSecond: 9},
	}, m, nil)

	alice := q.forPrincipal("User:alice")
	assert.Equal(t, 100.0, alice.wide[quotaProduce].perSec, "the literal principal wins")
	assert.Equal(t, 20.0, alice.wide[quotaFetch].perSec, "other kinds come from the next most specific rule that sets them")
	assert.Equal(t, 5.0, alice.wide[quotaRequest].perSec)
	assert.Equal(t, 7.0, alice.produce.match([]byte("logs.app")).perSec)
	assert.Nil(t, alice.produce.match([]byte("metrics")))
	assert.Equal(t, 9.0, alice.fetch.match([]byte("logs.audit")).perSec, "literal topic")
	assert.Nil(t, alice.fetch.match([]byte("logs.audit2")))

	loader := q.forPrincipal("User:loader")
	assert.Equal(t, 10.0, loader.wide[quotaProduce].perSec)
	assert.Equal(t, 3.0, loader.produce.matchString("logs.app").perSec, "the literal principal's topic rule wins")

	svc := q.forPrincipal("ServiceAccount:x")
	assert.Equal(t, 1.0, svc.wide[quotaProduce].perSec, `"*" matches any principal type`)
	assert.Nil(t, svc.wide[quotaFetch])
	assert.True(t, svc.produce.empty())

	assert.Same(t, alice, q.forPrincipal("User:alice"), "resolved once")
	bob := q.forPrincipal("User:bob")
	assert.NotSame(t, alice.wide[quotaFetch], bob.wide[quotaFetch], "each principal has its own allowance under User:*")
}

func TestValidateRules(t *testing.T) {
	for _, tt := range []struct {
		name   string
		quotas []QuotaRule
		comp   []CompressionRule
		want   string
	}{
		{"principal", []QuotaRule{{Principal: "alice", FetchBytesPerSecond: 1}}, nil, `principal "alice"`},
		{"negative", []QuotaRule{{Principal: "User:*", FetchBytesPerSecond: -1}}, nil, "must not be negative"},
		{"topic request rate", []QuotaRule{{Principal: "User:*", Topic: "t", RequestsPerSecond: 1}}, nil, "applies to a principal"},
		{"no topic", nil, []CompressionRule{{Codec: 4}}, "names no topic"},
		{"codec", nil, []CompressionRule{{Topic: "t", Codec: 9}}, "is not a codec"},
		{"duplicate", nil, []CompressionRule{{Topic: "t", Codec: 4}, {Topic: "t", Codec: 3}}, "already given"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorContains(t, validateRules(tt.comp, tt.quotas, Limits{}), tt.want)
		})
	}
}
