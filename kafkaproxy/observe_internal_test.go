package kafkaproxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestGroupRegistryJoinRule(t *testing.T) {
	now := time.Now()
	a := memberKey{"User:ANONYMOUS", "svc", "10.0.0.1"}
	b := memberKey{"User:ANONYMOUS", "svc", "10.0.0.2"}
	tests := []struct {
		name  string
		setup func(r *groupRegistry)
		key   memberKey
		topic string
		want  string
	}{
		{"no membership", func(*groupRegistry) {}, a, "t", ""},
		{"one group, any topic", func(r *groupRegistry) { r.seen(a, "g1", "m1", nil, now) }, a, "t", "g1"},
		{"other host is another consumer", func(r *groupRegistry) { r.seen(a, "g1", "m1", nil, now) }, b, "t", ""},
		{"two groups, topic decides", func(r *groupRegistry) {
			r.seen(a, "g1", "m1", []string{"orders"}, now)
			r.seen(a, "g2", "m2", []string{"payments"}, now)
		}, a, "payments", "g2"},
		{"two groups, topic unknown to both", func(r *groupRegistry) {
			r.seen(a, "g1", "m1", []string{"orders"}, now)
			r.seen(a, "g2", "m2", []string{"payments"}, now)
		}, a, "refunds", ""},
		{"two groups both reading the topic: ambiguous", func(r *groupRegistry) {
			r.seen(a, "g1", "m1", []string{"orders"}, now)
			r.seen(a, "g2", "m2", []string{"orders"}, now)
		}, a, "orders", ""},
		{"left", func(r *groupRegistry) { r.seen(a, "g1", "m1", nil, now); r.left(a, "g1") }, a, "t", ""},
		{"expired", func(r *groupRegistry) {
			r.seen(a, "g1", "m1", nil, now.Add(-time.Hour))
			r.expire(now.Add(-time.Minute))
		}, a, "t", ""},
		{"empty group name ignored", func(r *groupRegistry) { r.seen(a, "", "m1", nil, now) }, a, "t", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newGroupRegistry(100)
			tc.setup(r)
			assert.Equal(t, tc.want, r.lookup(tc.key, tc.topic))
		})
	}
}

func TestGroupRegistryGenerationAndCap(t *testing.T) {
	r := newGroupRegistry(1)
	k := memberKey{"p", "c", "h"}
	r.seen(k, "g", "m", []string{"t"}, time.Now())
	g := r.gen.Load()
	r.seen(k, "g", "m", []string{"t"}, time.Now()) // a heartbeat changes nothing a lookup sees
	assert.Equal(t, g, r.gen.Load())
	r.seen(memberKey{"p", "c", "other"}, "g", "m", nil, time.Now()) // past the cap
	assert.Equal(t, "", r.lookup(memberKey{"p", "c", "other"}, "t"))
}

func TestLabelCap(t *testing.T) {
	c := newLabelCap(2, []string{"vip"})
	assert.Equal(t, "a", c.value("a"))
	assert.Equal(t, "b", c.value("b"))
	assert.Equal(t, "other", c.value("c"))
	assert.Equal(t, "a", c.value("a"))
	assert.Equal(t, "vip", c.value("vip"))
	assert.Equal(t, "", c.value(""))
}

type produceErr struct {
	topic string
	id    [16]byte
	code  int16
}

func TestWalkProduceErrors(t *testing.T) {
	id := [16]byte{1, 2, 3}
	for v := int16(3); v <= 13; v++ {
		resp := kmsg.NewPtrProduceResponse()
		resp.SetVersion(v)
		for ti, name := range []string{"ok", "bad"} {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = name, id
			rt.TopicID[15] = byte(ti)
			for p := range 3 {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = int32(p)
				if name == "bad" && p != 1 {
					rp.ErrorCode = 6 // NOT_LEADER_OR_FOLLOWER
					msg := "moved"
					rp.ErrorMessage = &msg
					rp.ErrorRecords = []kmsg.ProduceResponseTopicPartitionErrorRecord{{RelativeOffset: 1, ErrorMessage: &msg}}
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		body := resp.AppendTo(nil)
		var got []produceErr
		require.NoError(t, walkProduceErrors(v, body, func(topic []byte, id [16]byte, code int16) {
			got = append(got, produceErr{string(topic), id, code})
		}), "v%d", v)
		require.Len(t, got, 2, "v%d", v)
		for _, g := range got {
			assert.EqualValues(t, 6, g.code)
			if v >= 13 {
				assert.Equal(t, byte(1), g.id[15])
			} else {
				assert.Equal(t, "bad", g.topic)
			}
		}
		// Every truncation is an error, never a panic.
		for cut := range len(body) {
			_ = walkProduceErrors(v, body[:cut], func([]byte, [16]byte, int16) {})
		}
	}
}

func FuzzWalkProduceErrors(f *testing.F) {
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(9)
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic = "t"
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.ErrorCode = 1
	rt.Partitions = append(rt.Partitions, rp)
	resp.Topics = append(resp.Topics, rt)
	f.Add(int16(9), resp.AppendTo(nil))
	resp.SetVersion(7)
	f.Add(int16(7), resp.AppendTo(nil))
	f.Add(int16(13), []byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, v int16, body []byte) {
		if v < 3 || v > 13 {
			return
		}
		_ = walkProduceErrors(v, body, func([]byte, [16]byte, int16) {})
	})
}

func TestHeartbeatGroup(t *testing.T) {
	for v := int16(0); v <= 4; v++ {
		req := kmsg.NewPtrHeartbeatRequest()
		req.SetVersion(v)
		req.Group, req.MemberID, req.Generation = "billing", "m-1", 3
		body := req.AppendTo(nil)
		g, ok := heartbeatGroup(v, body)
		require.True(t, ok, "v%d", v)
		assert.Equal(t, "billing", string(g), "v%d", v)
		for cut := range len(body) {
			heartbeatGroup(v, body[:cut]) // never panics
		}
	}
	_, ok := heartbeatGroup(4, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	assert.False(t, ok)
	_, ok = heartbeatGroup(0, []byte{0x7f, 0xff})
	assert.False(t, ok)
}

// TestHeartbeatRefreshAllocatesNothing: once a member's group is known, its
// heartbeats refresh it without allocating.
func TestHeartbeatRefreshAllocatesNothing(t *testing.T) {
	o := benchObs(t)
	req := kmsg.NewPtrHeartbeatRequest()
	req.SetVersion(4)
	req.Group, req.MemberID = "billing", "m-1"
	body := req.AppendTo(nil)
	id := o.ident.Load()
	o.observeGroup(heartbeatKey, 4, body, id)
	require.Equal(t, "billing", o.t.groups.lookup(memberKey{id.principal, id.clientID, id.host}, "any"))
	assert.Zero(t, testing.AllocsPerRun(100, func() { o.observeGroup(heartbeatKey, 4, body, id) }))
}

// TestGroupRegistryGroupsPerConsumerBounded: one client naming ever new
// groups (JoinGroup, OffsetCommit, ConsumerGroupHeartbeat with made-up group
// ids) holds a bounded number of memberships, not one per name.
func TestGroupRegistryGroupsPerConsumerBounded(t *testing.T) {
	r := newGroupRegistry(10)
	k := memberKey{"User:ANONYMOUS", "noisy", "10.0.0.9"}
	for i := range 10000 {
		r.seen(k, fmt.Sprintf("g%d", i), "m", []string{"t"}, time.Now())
	}
	r.mu.Lock()
	n := len(r.members[k])
	r.mu.Unlock()
	assert.LessOrEqual(t, n, maxGroupsPerMember)
	assert.Equal(t, "g0", func() string { // the first memberships still count
		r.seen(k, "g0", "m", []string{"only-g0"}, time.Now())
		return r.lookup(k, "only-g0")
	}())
}

// TestEdgeCacheBounded: a connection producing to ever new topic names (a
// raw client can name any; the request is counted before the broker answers)
// keeps a bounded edge cache, not one entry per name for its lifetime; the
// counts still reach the edges.
func TestEdgeCacheBounded(t *testing.T) {
	o := benchObs(t)
	batch := recordBatch(1, 10)
	for i := range 5000 {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(7)
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = fmt.Sprintf("made-up-%d", i)
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		o.walkProduce(7, req.AppendTo(nil))
	}
	assert.LessOrEqual(t, len(o.reqCache.byName)+len(o.reqCache.byID), maxCachedEdges+1)
	var records int64
	o.t.mu.Lock()
	for _, e := range o.t.list {
		records += e.records.Load()
	}
	o.t.mu.Unlock()
	assert.EqualValues(t, 5000, records, "every record counted, on its edge or the overflow edge")
}
