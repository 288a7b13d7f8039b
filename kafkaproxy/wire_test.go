package kafkaproxy_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// These tests speak the Kafka protocol over a plain net.Conn, with their own
// framing, so that they see exactly the bytes the proxy sends: response
// headers, correlation ids, the order of pipelined answers, and what the
// proxy answers by itself.

var wireClientID = "pipemesh-wire-test"

// wireRequest encodes req as a whole request frame, size prefix included:
// request header v1 (key, version, correlation id, nullable client id), plus
// an empty tagged-field section (header v2) when the request is flexible.
func wireRequest(corr int32, clientID *string, req kmsg.Request) []byte {
	return wireRequestTags(corr, clientID, req, kmsg.Tags{})
}

// wireRequestTags is wireRequest with tagged fields in the request header
// of a flexible request, which brokers skip and the proxy must too.
func wireRequestTags(corr int32, clientID *string, req kmsg.Request, tags kmsg.Tags) []byte {
	b := make([]byte, 4, 256)
	b = kbin.AppendInt16(b, req.Key())
	b = kbin.AppendInt16(b, req.GetVersion())
	b = kbin.AppendInt32(b, corr)
	b = kbin.AppendNullableString(b, clientID)
	if req.IsFlexible() {
		b = kbin.AppendUvarint(b, uint32(tags.Len()))
		b = tags.AppendEach(b)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// kmsgMax is the highest version kmsg knows for key, or -1.
func kmsgMax(key int16) int16 {
	r := kmsg.RequestForKey(key)
	if r == nil {
		return -1
	}
	return r.MaxVersion()
}

type wireConn struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	corr int32
}

func wireDial(t testing.TB, addr string) *wireConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &wireConn{t: t, nc: nc, br: bufio.NewReader(nc), corr: 100}
}

// write sends frames in one write, as a client pipelining them would.
func (w *wireConn) write(frames ...[]byte) {
	w.t.Helper()
	var all []byte
	for _, f := range frames {
		all = append(all, f...)
	}
	require.NoError(w.t, w.nc.SetWriteDeadline(time.Now().Add(10*time.Second)))
	_, err := w.nc.Write(all)
	require.NoError(w.t, err)
}

// read returns the next response frame without its size prefix.
func (w *wireConn) read() []byte {
	w.t.Helper()
	require.NoError(w.t, w.nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	var sz [4]byte
	_, err := io.ReadFull(w.br, sz[:])
	require.NoError(w.t, err, "reading a response size")
	n := binary.BigEndian.Uint32(sz[:])
	require.Less(w.t, n, uint32(64<<20), "absurd response size")
	frame := make([]byte, n)
	_, err = io.ReadFull(w.br, frame)
	require.NoError(w.t, err, "reading a %d-byte response", n)
	return frame
}

// roundTrip sends req with the next correlation id and decodes its answer.
func (w *wireConn) roundTrip(req kmsg.Request) kmsg.Response {
	w.t.Helper()
	w.corr++
	w.write(wireRequest(w.corr, &wireClientID, req))
	return wireDecode(w.t, w.read(), w.corr, req)
}

// wireDecode checks that frame answers req sent with corr and decodes it.
// The response header is v0 for ApiVersions and for non-flexible requests,
// and v1 (with a tagged-field section) otherwise. The body must re-encode to
// the very same bytes: nothing left over, nothing lost.
func wireDecode(t testing.TB, frame []byte, corr int32, req kmsg.Request) kmsg.Response {
	t.Helper()
	name := fmt.Sprintf("%s v%d", kmsg.NameForKey(req.Key()), req.GetVersion())
	require.GreaterOrEqual(t, len(frame), 4, name)
	require.Equal(t, corr, int32(binary.BigEndian.Uint32(frame)), "correlation id of the %s response", name)
	body := frame[4:]
	if req.IsFlexible() && req.Key() != int16(kmsg.ApiVersions) {
		b := kbin.Reader{Src: body}
		for n := b.Uvarint(); n > 0 && b.Ok(); n-- {
			b.Uvarint()
			b.Span(int(b.Uvarint()))
		}
		require.NoError(t, b.Complete(), "%s response header tags", name)
		body = b.Src
	}
	resp := req.ResponseKind()
	require.NoError(t, resp.ReadFrom(body), "decoding the %s response", name)
	require.Equal(t, body, resp.AppendTo(nil), "%s response does not re-encode to its own bytes", name)
	return resp
}

func wireApiVersions(v int16) *kmsg.ApiVersionsRequest {
	r := kmsg.NewPtrApiVersionsRequest()
	r.SetVersion(v)
	r.ClientSoftwareName = "pipemesh-wire-test"
	r.ClientSoftwareVersion = "1.0.0"
	return r
}

// versions asks for ApiVersions at kmsg's max and returns the ranges.
func (w *wireConn) versions() map[int16]kmsg.ApiVersionsResponseApiKey {
	w.t.Helper()
	resp := w.roundTrip(wireApiVersions(kmsgMax(int16(kmsg.ApiVersions)))).(*kmsg.ApiVersionsResponse)
	require.Zero(w.t, resp.ErrorCode)
	out := make(map[int16]kmsg.ApiVersionsResponseApiKey, len(resp.ApiKeys))
	for _, k := range resp.ApiKeys {
		out[k.ApiKey] = k
	}
	return out
}

// wireUnsupportedV0 is the exact frame body (after the size) of a v0
// ApiVersions answer with UNSUPPORTED_VERSION that lists only ApiVersions.
func wireUnsupportedV0(corr int32) []byte {
	b := kbin.AppendInt32(nil, corr)
	b = kbin.AppendInt16(b, kerr.UnsupportedVersion.Code)
	b = kbin.AppendInt32(b, 1) // one api key
	b = kbin.AppendInt16(b, int16(kmsg.ApiVersions))
	b = kbin.AppendInt16(b, 0)
	b = kbin.AppendInt16(b, kmsgMax(int16(kmsg.ApiVersions)))
	return b
}

func wireMetadata(v int16, topics ...string) *kmsg.MetadataRequest {
	r := kmsg.NewPtrMetadataRequest()
	r.SetVersion(v)
	if topics == nil && v == 0 {
		topics = []string{} // v0: an empty list means every topic
	}
	for _, tp := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(tp)
		r.Topics = append(r.Topics, rt)
	}
	return r
}

// wireBatch builds a magic v2 record batch holding one record.
func wireBatch(t testing.TB, key, value string) []byte {
	var rec []byte
	rec = kbin.AppendInt8(rec, 0)    // attributes
	rec = kbin.AppendVarlong(rec, 0) // timestamp delta
	rec = kbin.AppendVarint(rec, 0)  // offset delta
	rec = kbin.AppendVarintBytes(rec, []byte(key))
	rec = kbin.AppendVarintBytes(rec, []byte(value))
	rec = kbin.AppendVarint(rec, 0) // headers
	records := kbin.AppendVarint(nil, int32(len(rec)))
	records = append(records, rec...)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: 1, Records: records,
	}
	// Everything after the length: epoch 4, magic 1, crc 4, attributes 2,
	// last offset delta 4, timestamps 8+8, producer id 8, epoch 2,
	// sequence 4, count 4.
	b.Length = int32(49 + len(records))
	out := b.AppendTo(nil)
	require.Len(t, out, 12+int(b.Length))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func wireProduce(v, acks int16, topic string, id [16]byte, batch []byte) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(v)
	r.Acks = acks
	r.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	r.Topics = append(r.Topics, rt)
	return r
}

func hostPort(host string, port int32) string { return net.JoinHostPort(host, strconv.Itoa(int(port))) }

// requireProxyBrokers checks that brokers (id, host, port) are exactly what
// the proxy advertises for those ids, and never an upstream address.
func requireProxyBrokers(t testing.TB, e *env, what string, ids []int32, addrs []string) {
	t.Helper()
	adv := e.proxy.BrokerAddrs()
	upstream := e.cluster.ListenAddrs()
	for i, id := range ids {
		assert.NotContains(t, upstream, addrs[i], "%s: node %d leaks its upstream address", what, id)
		want, ok := adv[id]
		if assert.True(t, ok, "%s: node %d has no proxy listener", what, id) {
			assert.Equal(t, want, addrs[i], "%s: node %d", what, id)
		}
	}
}

func tagsOf(tags kmsg.Tags) map[uint32]string {
	out := make(map[uint32]string)
	tags.Each(func(k uint32, v []byte) { out[k] = string(v) })
	return out
}

// upstreamBrokers asks the cluster itself (not the proxy) for its brokers.
func upstreamBrokers(t testing.TB, e *env) map[int32]kmsg.MetadataResponseBroker {
	t.Helper()
	w := wireDial(t, e.cluster.ListenAddrs()[0])
	resp := w.roundTrip(wireMetadata(12)).(*kmsg.MetadataResponse)
	out := make(map[int32]kmsg.MetadataResponseBroker)
	for _, b := range resp.Brokers {
		out[b.NodeID] = b
	}
	require.Len(t, out, 3)
	return out
}

// TestWireApiVersionsTooNew sends ApiVersions at versions newer than kmsg
// knows. The proxy must answer by itself, byte for byte the v0 answer of
// KIP-511: correlation id echoed, UNSUPPORTED_VERSION, and ApiVersions
// (key 18) offered up to kmsg's max; and the connection must stay usable.
func TestWireApiVersionsTooNew(t *testing.T) {
	e := startEnv(t)
	w := wireDial(t, e.addr)
	kmax := kmsgMax(int16(kmsg.ApiVersions))
	for i, v := range []int16{kmax + 1, 99, math.MaxInt16} {
		corr := int32(7000 + i)
		clientID := &wireClientID
		if i == 1 {
			clientID = nil // a null client id is legal
		}
		w.write(wireRequest(corr, clientID, wireApiVersions(v)))
		frame := w.read()
		require.Equal(t, wireUnsupportedV0(corr), frame, "answer to ApiVersions v%d", v)

		resp := kmsg.NewPtrApiVersionsResponse()
		resp.SetVersion(0)
		require.NoError(t, resp.ReadFrom(frame[4:]))
		assert.Equal(t, kerr.UnsupportedVersion.Code, resp.ErrorCode)
		require.Len(t, resp.ApiKeys, 1)
		assert.Equal(t, int16(kmsg.ApiVersions), resp.ApiKeys[0].ApiKey)
		assert.Equal(t, kmax, resp.ApiKeys[0].MaxVersion)
	}
	// The client retries at the version offered, on the same connection.
	resp := w.roundTrip(wireApiVersions(kmax)).(*kmsg.ApiVersionsResponse)
	assert.Zero(t, resp.ErrorCode)
	assert.Greater(t, len(resp.ApiKeys), 10)
}

// TestWireApiVersionsCapped asks the proxy and the broker behind it for
// ApiVersions at every version kmsg knows. The proxy's answer has a v0
// header (the body starts at byte 4 even for flexible versions) and lists
// exactly the broker's keys that kmsg knows, each capped at kmsg's max
// (DescribeQuorum at 1); nothing else in the answer changes. A broker that
// offers keys kmsg does not know, versions beyond kmsg's, or a range that
// starts above kmsg's max is cut down the same way.
func TestWireApiVersionsCapped(t *testing.T) {
	e := startEnv(t)
	kmax := kmsgMax(int16(kmsg.ApiVersions))

	capped := func(up []kmsg.ApiVersionsResponseApiKey) []kmsg.ApiVersionsResponseApiKey {
		var want []kmsg.ApiVersionsResponseApiKey
		for _, k := range up {
			m := kmsgMax(k.ApiKey)
			if m < 0 {
				continue
			}
			if k.ApiKey == int16(kmsg.DescribeQuorum) {
				m = min(m, 1)
			}
			k.MaxVersion = min(k.MaxVersion, m)
			if k.MinVersion > k.MaxVersion {
				continue
			}
			want = append(want, k)
		}
		return want
	}
	checkInvariants := func(t *testing.T, keys []kmsg.ApiVersionsResponseApiKey) {
		seen := make(map[int16]bool)
		for _, k := range keys {
			assert.False(t, seen[k.ApiKey], "key %d listed twice", k.ApiKey)
			seen[k.ApiKey] = true
			m := kmsgMax(k.ApiKey)
			if !assert.GreaterOrEqual(t, m, int16(0), "key %d is unknown to kmsg", k.ApiKey) {
				continue
			}
			assert.LessOrEqual(t, k.MaxVersion, m, "%s", kmsg.NameForKey(k.ApiKey))
			assert.LessOrEqual(t, k.MinVersion, k.MaxVersion, "%s", kmsg.NameForKey(k.ApiKey))
			if k.ApiKey == int16(kmsg.DescribeQuorum) {
				assert.LessOrEqual(t, k.MaxVersion, int16(1), "DescribeQuorum")
			}
		}
		for _, k := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.Metadata, kmsg.ApiVersions, kmsg.FindCoordinator} {
			assert.True(t, seen[int16(k)], "%s missing", kmsg.NameForKey(int16(k)))
		}
	}

	up := wireDial(t, e.cluster.ListenAddrs()[0])
	px := wireDial(t, e.addr)
	for v := int16(0); v <= kmax; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			// wireDecode reads ApiVersions with a v0 header and
			// requires the body to re-encode exactly.
			ur := up.roundTrip(wireApiVersions(v)).(*kmsg.ApiVersionsResponse)
			pr := px.roundTrip(wireApiVersions(v)).(*kmsg.ApiVersionsResponse)
			require.Zero(t, ur.ErrorCode)
			require.Zero(t, pr.ErrorCode)
			checkInvariants(t, pr.ApiKeys)
			assert.Equal(t, capped(ur.ApiKeys), pr.ApiKeys)
			// Everything but the key list (throttle, features, ...)
			// is the broker's.
			ur.ApiKeys, pr.ApiKeys = nil, nil
			assert.Equal(t, ur.AppendTo(nil), pr.AppendTo(nil))
		})
	}

	t.Run("injected", func(t *testing.T) {
		offered := []kmsg.ApiVersionsResponseApiKey{
			{ApiKey: int16(kmsg.Produce), MinVersion: 3, MaxVersion: 99},
			{ApiKey: int16(kmsg.Metadata), MinVersion: 40, MaxVersion: 50}, // starts above kmsg's max
			{ApiKey: int16(kmsg.ApiVersions), MinVersion: 0, MaxVersion: 77},
			{ApiKey: int16(kmsg.DescribeQuorum), MinVersion: 0, MaxVersion: 2},
			{ApiKey: 999, MinVersion: 0, MaxVersion: 3}, // unknown to kmsg
			{ApiKey: int16(kmsg.FindCoordinator), MinVersion: 0, MaxVersion: 1},
		}
		e.cluster.ControlKey(int16(kmsg.ApiVersions), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
			req := kreq.(*kmsg.ApiVersionsRequest)
			if req.ClientSoftwareName != "pipemesh-wire-inject" {
				return nil, nil, false
			}
			resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
			resp.ApiKeys = slices.Clone(offered)
			resp.ThrottleMillis = 3
			return resp, nil, true
		})
		req := wireApiVersions(kmax)
		req.ClientSoftwareName = "pipemesh-wire-inject"
		pr := px.roundTrip(req).(*kmsg.ApiVersionsResponse)
		assert.Equal(t, int32(3), pr.ThrottleMillis)
		assert.Equal(t, []kmsg.ApiVersionsResponseApiKey{
			{ApiKey: int16(kmsg.Produce), MinVersion: 3, MaxVersion: kmsgMax(int16(kmsg.Produce))},
			{ApiKey: int16(kmsg.ApiVersions), MinVersion: 0, MaxVersion: kmax},
			{ApiKey: int16(kmsg.DescribeQuorum), MinVersion: 0, MaxVersion: 1},
			{ApiKey: int16(kmsg.FindCoordinator), MinVersion: 0, MaxVersion: 1},
		}, pr.ApiKeys)
	})

	// A broker older than the client answers UNSUPPORTED_VERSION in v0
	// (KIP-511); the proxy must read that as v0, still drop what kmsg
	// does not know, and pass on a v0 answer.
	t.Run("broker-unsupported", func(t *testing.T) {
		e.cluster.ControlKey(int16(kmsg.ApiVersions), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
			req := kreq.(*kmsg.ApiVersionsRequest)
			if req.ClientSoftwareName != "pipemesh-wire-old-broker" {
				return nil, nil, false
			}
			resp := kmsg.NewPtrApiVersionsResponse()
			resp.SetVersion(0)
			resp.ErrorCode = kerr.UnsupportedVersion.Code
			resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{
				{ApiKey: 999, MinVersion: 0, MaxVersion: 1},
				{ApiKey: int16(kmsg.ApiVersions), MinVersion: 0, MaxVersion: 2},
			}
			return resp, nil, true
		})
		req := wireApiVersions(kmax)
		req.ClientSoftwareName = "pipemesh-wire-old-broker"
		px.corr++
		px.write(wireRequest(px.corr, &wireClientID, req))
		frame := px.read()
		want := kbin.AppendInt32(nil, px.corr)
		want = kbin.AppendInt16(want, kerr.UnsupportedVersion.Code)
		want = kbin.AppendInt32(want, 1)
		want = kbin.AppendInt16(want, int16(kmsg.ApiVersions))
		want = kbin.AppendInt16(want, 0)
		want = kbin.AppendInt16(want, 2)
		assert.Equal(t, want, frame)
	})
}

// TestWirePipelining writes 50 requests in one write without reading:
// ApiVersions and Metadata at several versions, two acks=0 Produce requests
// (non-flexible v7 and a flexible version), two acks=-1 Produce requests,
// and one too-new ApiVersions that the proxy answers itself; some flexible
// requests carry tagged fields in their header. The answers
// must come in request order with the right correlation ids and none for
// acks=0; a request sent afterwards gets the very next answer. The acks=0
// records must then be in the log.
func TestWirePipelining(t *testing.T) {
	const topic = "wire-pipe"
	e := startEnv(t, withTopic(topic, 1))
	leader := e.cluster.LeaderFor(topic, 0)
	w := wireDial(t, e.proxy.BrokerAddrs()[leader])
	vs := w.versions()
	prodFlex := min(vs[int16(kmsg.Produce)].MaxVersion, 12) // 13 names topics by id
	require.GreaterOrEqual(t, prodFlex, int16(9), "need a flexible Produce version")
	metaMax := vs[int16(kmsg.Metadata)].MaxVersion
	avMax := vs[int16(kmsg.ApiVersions)].MaxVersion

	type sent struct {
		corr       int32
		req        kmsg.Request
		noResp     bool // acks=0
		tooNew     bool // answered by the proxy
		headerTags bool // tagged fields in the request header
	}
	var reqs []sent
	var frames [][]byte
	var hdrTags kmsg.Tags
	hdrTags.Set(3, []byte("header tag the proxy must skip"))
	hdrTags.Set(200, []byte{0, 0, 0, 0})
	add := func(s sent) {
		s.corr = int32(5000 + len(reqs)*3) // not consecutive, to catch renumbering
		reqs = append(reqs, s)
		if s.headerTags {
			frames = append(frames, wireRequestTags(s.corr, &wireClientID, s.req, hdrTags))
			return
		}
		frames = append(frames, wireRequest(s.corr, &wireClientID, s.req))
	}
	for i := range 50 {
		switch i {
		case 12:
			add(sent{req: wireProduce(7, 0, topic, [16]byte{}, wireBatch(t, "acks0-v7", "fire and forget, v7")), noResp: true})
		case 20:
			add(sent{req: wireProduce(7, -1, topic, [16]byte{}, wireBatch(t, "acksall-v7", "acknowledged, v7"))})
		case 25:
			add(sent{req: wireApiVersions(99), tooNew: true})
		case 30:
			add(sent{req: wireProduce(prodFlex, 0, topic, [16]byte{}, wireBatch(t, "acks0-flex", "fire and forget, flexible")), noResp: true, headerTags: true})
		case 38:
			add(sent{req: wireProduce(prodFlex, -1, topic, [16]byte{}, wireBatch(t, "acksall-flex", "acknowledged, flexible")), headerTags: true})
		default:
			switch i % 5 {
			case 0:
				add(sent{req: wireApiVersions(avMax)})
			case 1:
				add(sent{req: wireMetadata(metaMax, topic), headerTags: i%2 == 0})
			case 2:
				add(sent{req: wireApiVersions(0)})
			case 3:
				add(sent{req: wireMetadata(4, topic)})
			case 4:
				add(sent{req: wireMetadata(0)})
			}
		}
	}
	require.Len(t, reqs, 50)
	w.write(frames...)

	for _, s := range reqs {
		if s.noResp {
			continue
		}
		frame := w.read()
		if s.tooNew {
			require.Equal(t, wireUnsupportedV0(s.corr), frame, "local answer to ApiVersions v99")
			continue
		}
		resp := wireDecode(t, frame, s.corr, s.req)
		switch r := resp.(type) {
		case *kmsg.ApiVersionsResponse:
			assert.Zero(t, r.ErrorCode)
		case *kmsg.MetadataResponse:
			var ids []int32
			var addrs []string
			for _, b := range r.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
			}
			require.Len(t, ids, 3)
			requireProxyBrokers(t, e, fmt.Sprintf("Metadata v%d", r.Version), ids, addrs)
		case *kmsg.ProduceResponse:
			require.Len(t, r.Topics, 1)
			require.Len(t, r.Topics[0].Partitions, 1)
			assert.Zero(t, r.Topics[0].Partitions[0].ErrorCode, "Produce v%d", r.Version)
		default:
			t.Fatalf("unexpected %T", resp)
		}
	}
	// Had the proxy forwarded an answer for an acks=0 produce, or lost
	// track of one, this would not be the next frame.
	w.corr = 99999
	assert.Empty(t, w.roundTrip(wireApiVersions(avMax)).(*kmsg.ApiVersionsResponse).ErrorCode)

	// The acks=0 records landed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	want := map[string]string{
		"acks0-v7":     "fire and forget, v7",
		"acksall-v7":   "acknowledged, v7",
		"acks0-flex":   "fire and forget, flexible",
		"acksall-flex": "acknowledged, flexible",
	}
	got := make(map[string]string)
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "records so far: %v", got)
		fs.EachError(func(_ string, _ int32, err error) { t.Errorf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) {
			_, dup := got[string(r.Key)]
			assert.False(t, dup, "record %q twice", r.Key)
			got[string(r.Key)] = string(r.Value)
		})
	}
	assert.Equal(t, want, got)
}

// TestWireFlexibleMetadata sends Metadata at every version the proxy offers,
// flexible ones with header v2, and decodes each answer (header v1 from v9):
// every broker is a proxy listener, topic ids are the cluster's, and the
// body re-encodes to its own bytes.
func TestWireFlexibleMetadata(t *testing.T) {
	const topic = "wire-meta"
	e := startEnv(t, withTopic(topic, 2))
	w := wireDial(t, e.addr)
	vs := w.versions()
	max := vs[int16(kmsg.Metadata)].MaxVersion
	require.GreaterOrEqual(t, max, int16(9), "the proxy offers no flexible Metadata")
	id := e.cluster.TopicInfo(topic).TopicID
	for v := vs[int16(kmsg.Metadata)].MinVersion; v <= max; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			req := wireMetadata(v, topic)
			require.Equal(t, v >= 9, req.IsFlexible())
			resp := w.roundTrip(req).(*kmsg.MetadataResponse)
			var ids []int32
			var addrs []string
			for _, b := range resp.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
			}
			require.Len(t, ids, 3)
			requireProxyBrokers(t, e, fmt.Sprintf("Metadata v%d", v), ids, addrs)
			require.Len(t, resp.Topics, 1)
			assert.Equal(t, topic, *resp.Topics[0].Topic)
			assert.Len(t, resp.Topics[0].Partitions, 2)
			if v >= 10 {
				assert.Equal(t, id, resp.Topics[0].TopicID)
			}
		})
	}
}

// TestWireCoordinatorAndClusterAddrs asks for group and transaction
// coordinators (FindCoordinator, one coordinator up to v3, a list from v4)
// and for the cluster's brokers (DescribeCluster) at every version the proxy
// offers: every address must be the proxy listener for that node.
func TestWireCoordinatorAndClusterAddrs(t *testing.T) {
	e := startEnv(t)
	w := wireDial(t, e.addr)
	vs := w.versions()
	keys := []string{"group-a", "group-b", "group-c", "group-d"}

	fc := vs[int16(kmsg.FindCoordinator)]
	for v := fc.MinVersion; v <= fc.MaxVersion; v++ {
		for _, typ := range []int8{0, 1} { // group, transaction
			if typ == 1 && v == 0 {
				continue
			}
			t.Run(fmt.Sprintf("FindCoordinator/v%d/type%d", v, typ), func(t *testing.T) {
				req := kmsg.NewPtrFindCoordinatorRequest()
				req.SetVersion(v)
				req.CoordinatorType = typ
				var ids []int32
				var addrs []string
				if v <= 3 {
					for _, k := range keys {
						req.CoordinatorKey = k
						resp := w.roundTrip(req).(*kmsg.FindCoordinatorResponse)
						require.Zero(t, resp.ErrorCode, k)
						ids, addrs = append(ids, resp.NodeID), append(addrs, hostPort(resp.Host, resp.Port))
					}
				} else {
					req.CoordinatorKeys = keys
					resp := w.roundTrip(req).(*kmsg.FindCoordinatorResponse)
					require.Len(t, resp.Coordinators, len(keys))
					for _, c := range resp.Coordinators {
						require.Zero(t, c.ErrorCode, c.Key)
						ids, addrs = append(ids, c.NodeID), append(addrs, hostPort(c.Host, c.Port))
					}
				}
				requireProxyBrokers(t, e, fmt.Sprintf("FindCoordinator v%d", v), ids, addrs)
			})
		}
	}

	dc, ok := vs[int16(kmsg.DescribeCluster)]
	require.True(t, ok, "the proxy does not offer DescribeCluster")
	for v := dc.MinVersion; v <= dc.MaxVersion; v++ {
		t.Run(fmt.Sprintf("DescribeCluster/v%d", v), func(t *testing.T) {
			req := kmsg.NewPtrDescribeClusterRequest()
			req.SetVersion(v)
			resp := w.roundTrip(req).(*kmsg.DescribeClusterResponse)
			require.Zero(t, resp.ErrorCode)
			var ids []int32
			var addrs []string
			for _, b := range resp.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
			}
			require.Len(t, ids, 3)
			requireProxyBrokers(t, e, fmt.Sprintf("DescribeCluster v%d", v), ids, addrs)
		})
	}
}

// TestWireUnknownTagsSurviveRewrite makes the broker answer Metadata with
// tagged fields no one knows, at the top level, in every broker entry, in
// the topic and in its partition. The proxy rewrites the broker addresses;
// the client must still see every unknown tag, byte for byte.
func TestWireUnknownTagsSurviveRewrite(t *testing.T) {
	const probe = "tags-probe"
	e := startEnv(t)
	upBrokers := upstreamBrokers(t, e)
	w := wireDial(t, e.addr)
	vs := w.versions()
	probeID := [16]byte{0x7a, 0x67, 15: 1}

	for v := int16(9); v <= vs[int16(kmsg.Metadata)].MaxVersion; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			e.cluster.ControlKey(int16(kmsg.Metadata), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				req := kreq.(*kmsg.MetadataRequest)
				if len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != probe {
					return nil, nil, false // the proxy's own refresh, and anyone else
				}
				resp := req.ResponseKind().(*kmsg.MetadataResponse)
				resp.UnknownTags.Set(99, []byte("top-level"))
				resp.UnknownTags.Set(1000, []byte{0, 1, 2, 0xff})
				resp.ClusterID = kmsg.StringPtr("pipemesh-dev")
				for _, id := range slices.Sorted(maps.Keys(upBrokers)) {
					b := upBrokers[id]
					b.UnknownTags = kmsg.Tags{}
					b.UnknownTags.Set(98, fmt.Appendf(nil, "broker-%d", id))
					resp.Brokers = append(resp.Brokers, b)
				}
				rt := kmsg.NewMetadataResponseTopic()
				rt.Topic, rt.TopicID = kmsg.StringPtr(probe), probeID
				rt.UnknownTags.Set(97, []byte("topic"))
				rp := kmsg.NewMetadataResponseTopicPartition()
				rp.Leader, rp.Replicas, rp.ISR = 0, []int32{0}, []int32{0}
				rp.UnknownTags.Set(96, []byte("partition"))
				rt.Partitions = append(rt.Partitions, rp)
				resp.Topics = append(resp.Topics, rt)
				return resp, nil, true
			})
			resp := w.roundTrip(wireMetadata(v, probe)).(*kmsg.MetadataResponse)
			assert.Equal(t, map[uint32]string{99: "top-level", 1000: "\x00\x01\x02\xff"}, tagsOf(resp.UnknownTags))
			var ids []int32
			var addrs []string
			for _, b := range resp.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
				assert.Equal(t, map[uint32]string{98: fmt.Sprintf("broker-%d", b.NodeID)}, tagsOf(b.UnknownTags))
			}
			require.Len(t, ids, 3)
			requireProxyBrokers(t, e, "Metadata with unknown tags", ids, addrs)
			require.Len(t, resp.Topics, 1)
			assert.Equal(t, map[uint32]string{97: "topic"}, tagsOf(resp.Topics[0].UnknownTags))
			require.Len(t, resp.Topics[0].Partitions, 1)
			assert.Equal(t, map[uint32]string{96: "partition"}, tagsOf(resp.Topics[0].Partitions[0].UnknownTags))
		})
	}
}

// TestWireProduceNodeEndpoints makes the broker answer Produce v10+ with
// NOT_LEADER_OR_FOLLOWER and KIP-951 leader endpoints (NodeEndpoints): a
// known node, and a node the proxy has never seen. The client must see the
// proxy's listener for each node (bound by the time the answer arrives),
// with the rack, current leader and unknown tags intact.
func TestWireProduceNodeEndpoints(t *testing.T) {
	e := startEnv(t)
	upBrokers := upstreamBrokers(t, e)
	w := wireDial(t, e.addr)
	vs := w.versions()
	max := vs[int16(kmsg.Produce)].MaxVersion
	require.GreaterOrEqual(t, max, int16(10), "the proxy offers no Produce with NodeEndpoints")
	const topic = "nodeep-produce"
	topicID := [16]byte{0x6e, 0x65, 15: 2}
	const newNode = 42

	for v := int16(10); v <= max; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			e.cluster.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				req := kreq.(*kmsg.ProduceRequest)
				if len(req.Topics) != 1 || (req.Topics[0].Topic != topic && req.Topics[0].TopicID != topicID) {
					return nil, nil, false
				}
				resp := req.ResponseKind().(*kmsg.ProduceResponse)
				rt := kmsg.NewProduceResponseTopic()
				rt.Topic, rt.TopicID = req.Topics[0].Topic, req.Topics[0].TopicID
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.ErrorCode = kerr.NotLeaderForPartition.Code
				rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
				rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = 2, 7
				rt.Partitions = append(rt.Partitions, rp)
				resp.Topics = append(resp.Topics, rt)
				b2 := kmsg.NewProduceResponseBroker()
				b2.NodeID, b2.Host, b2.Port, b2.Rack = 2, upBrokers[2].Host, upBrokers[2].Port, kmsg.StringPtr("rack-2")
				b2.UnknownTags.Set(33, []byte("endpoint tag"))
				bn := kmsg.NewProduceResponseBroker()
				bn.NodeID, bn.Host, bn.Port = newNode, upBrokers[0].Host, upBrokers[0].Port
				resp.Brokers = append(resp.Brokers, b2, bn)
				resp.UnknownTags.Set(55, []byte("top"))
				return resp, nil, true
			})
			req := wireProduce(v, 1, topic, [16]byte{}, wireBatch(t, "k", "v"))
			if v >= 13 {
				req = wireProduce(v, 1, "", topicID, wireBatch(t, "k", "v"))
			}
			resp := w.roundTrip(req).(*kmsg.ProduceResponse)
			require.Len(t, resp.Brokers, 2)
			var ids []int32
			var addrs []string
			for _, b := range resp.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
			}
			assert.Equal(t, []int32{2, newNode}, ids)
			requireProxyBrokers(t, e, fmt.Sprintf("Produce v%d NodeEndpoints", v), ids, addrs)
			if assert.NotNil(t, resp.Brokers[0].Rack) {
				assert.Equal(t, "rack-2", *resp.Brokers[0].Rack)
			}
			assert.Nil(t, resp.Brokers[1].Rack)
			assert.Equal(t, map[uint32]string{33: "endpoint tag"}, tagsOf(resp.Brokers[0].UnknownTags))
			assert.Equal(t, map[uint32]string{55: "top"}, tagsOf(resp.UnknownTags))
			require.Len(t, resp.Topics, 1)
			require.Len(t, resp.Topics[0].Partitions, 1)
			p := resp.Topics[0].Partitions[0]
			assert.Equal(t, kerr.NotLeaderForPartition.Code, p.ErrorCode)
			assert.Equal(t, int32(2), p.CurrentLeader.LeaderID)
			assert.Equal(t, int32(7), p.CurrentLeader.LeaderEpoch)
			// The new node's listener is up and leads to the broker.
			nw := wireDial(t, e.proxy.BrokerAddrs()[newNode])
			assert.NotEmpty(t, nw.versions())
		})
	}
}

// TestWireFetchNodeEndpoints is TestWireProduceNodeEndpoints for Fetch v16+.
func TestWireFetchNodeEndpoints(t *testing.T) {
	e := startEnv(t)
	upBrokers := upstreamBrokers(t, e)
	w := wireDial(t, e.addr)
	vs := w.versions()
	max := vs[int16(kmsg.Fetch)].MaxVersion
	require.GreaterOrEqual(t, max, int16(16), "the proxy offers no Fetch with NodeEndpoints")
	topicID := [16]byte{0x66, 0x65, 15: 3}

	for v := int16(16); v <= max; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			e.cluster.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				req := kreq.(*kmsg.FetchRequest)
				if len(req.Topics) != 1 || req.Topics[0].TopicID != topicID {
					return nil, nil, false
				}
				resp := req.ResponseKind().(*kmsg.FetchResponse)
				resp.SessionID = 0
				rt := kmsg.NewFetchResponseTopic()
				rt.TopicID = topicID
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.ErrorCode = kerr.NotLeaderForPartition.Code
				rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
				rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = 1, 3
				rp.UnknownTags.Set(44, []byte("partition"))
				rt.Partitions = append(rt.Partitions, rp)
				resp.Topics = append(resp.Topics, rt)
				b1 := kmsg.NewFetchResponseBroker()
				b1.NodeID, b1.Host, b1.Port, b1.Rack = 1, upBrokers[1].Host, upBrokers[1].Port, kmsg.StringPtr("rack-1")
				b0 := kmsg.NewFetchResponseBroker()
				b0.NodeID, b0.Host, b0.Port = 0, upBrokers[0].Host, upBrokers[0].Port
				resp.Brokers = append(resp.Brokers, b1, b0)
				resp.UnknownTags.Set(77, []byte("fetch top"))
				return resp, nil, true
			})
			req := kmsg.NewPtrFetchRequest()
			req.SetVersion(v)
			req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 100, 1, 1<<20
			req.SessionEpoch = -1
			rt := kmsg.NewFetchRequestTopic()
			rt.TopicID = topicID
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.PartitionMaxBytes = 1 << 20
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)

			resp := w.roundTrip(req).(*kmsg.FetchResponse)
			require.Len(t, resp.Brokers, 2)
			var ids []int32
			var addrs []string
			for _, b := range resp.Brokers {
				ids, addrs = append(ids, b.NodeID), append(addrs, hostPort(b.Host, b.Port))
			}
			assert.Equal(t, []int32{1, 0}, ids)
			requireProxyBrokers(t, e, fmt.Sprintf("Fetch v%d NodeEndpoints", v), ids, addrs)
			if assert.NotNil(t, resp.Brokers[0].Rack) {
				assert.Equal(t, "rack-1", *resp.Brokers[0].Rack)
			}
			assert.Equal(t, map[uint32]string{77: "fetch top"}, tagsOf(resp.UnknownTags))
			require.Len(t, resp.Topics, 1)
			assert.Equal(t, topicID, resp.Topics[0].TopicID)
			require.Len(t, resp.Topics[0].Partitions, 1)
			p := resp.Topics[0].Partitions[0]
			assert.Equal(t, kerr.NotLeaderForPartition.Code, p.ErrorCode)
			assert.Equal(t, int32(1), p.CurrentLeader.LeaderID)
			assert.Equal(t, map[uint32]string{44: "partition"}, tagsOf(p.UnknownTags))
		})
	}
}

// TestWireTopicIDCache checks the proxy's topic id to name cache: topics
// that exist at start are known once the proxy is ready, a Metadata answer
// the proxy forwards teaches it new topics, a topic created behind its back
// is found by TopicName's refresh on a miss, a recreated topic's old id is
// forgotten, and an id no one knows is an error.
func TestWireTopicIDCache(t *testing.T) {
	e := startEnv(t, withTopic("ids-a", 2), withTopic("ids-b", 1),
		withProxyConfig(func(c *kafkaproxy.Config) { c.MetadataRefresh = time.Hour }))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cache := e.proxy.Topics()

	// Seeded topics: learned by the proxy's first refresh. The ids are
	// the same the cluster hands clients through the proxy.
	w := wireDial(t, e.addr)
	md := w.roundTrip(wireMetadata(12, "ids-a", "ids-b")).(*kmsg.MetadataResponse)
	require.Len(t, md.Topics, 2)
	for _, tp := range md.Topics {
		id := e.cluster.TopicInfo(*tp.Topic).TopicID
		assert.Equal(t, id, tp.TopicID, *tp.Topic)
		name, ok := cache.Name(id)
		assert.True(t, ok, *tp.Topic)
		assert.Equal(t, *tp.Topic, name)
		got, ok := cache.ID(*tp.Topic)
		assert.True(t, ok)
		assert.Equal(t, id, got)
	}

	// A topic created behind the proxy's back: a miss, then TopicName
	// refreshes and finds it.
	require.NoError(t, e.cluster.CreateTopic("ids-late", 3, nil))
	lateID := e.cluster.TopicInfo("ids-late").TopicID
	_, ok := cache.Name(lateID)
	require.False(t, ok, "the proxy cannot know ids-late yet (refresh is hourly)")
	name, err := e.proxy.TopicName(ctx, lateID)
	require.NoError(t, err)
	assert.Equal(t, "ids-late", name)
	name, ok = cache.Name(lateID)
	assert.True(t, ok)
	assert.Equal(t, "ids-late", name)

	// A topic a client learns about through the proxy is cached from the
	// forwarded Metadata answer, before the client even reads it.
	require.NoError(t, e.cluster.CreateTopic("ids-seen", 1, nil))
	seenID := e.cluster.TopicInfo("ids-seen").TopicID
	_, ok = cache.Name(seenID)
	require.False(t, ok)
	md = w.roundTrip(wireMetadata(12, "ids-seen")).(*kmsg.MetadataResponse)
	require.Len(t, md.Topics, 1)
	assert.Equal(t, seenID, md.Topics[0].TopicID)
	name, ok = cache.Name(seenID)
	assert.True(t, ok)
	assert.Equal(t, "ids-seen", name)

	// Recreated: the new id resolves, the old one no longer does.
	oldID, ok := cache.ID("ids-b")
	require.True(t, ok)
	require.NoError(t, e.cluster.DeleteTopic("ids-b"))
	require.NoError(t, e.cluster.CreateTopic("ids-b", 1, nil))
	newID := e.cluster.TopicInfo("ids-b").TopicID
	require.NotEqual(t, oldID, newID)
	name, err = e.proxy.TopicName(ctx, newID)
	require.NoError(t, err)
	assert.Equal(t, "ids-b", name)
	_, ok = cache.Name(oldID)
	assert.False(t, ok, "the old id of a recreated topic must not resolve")

	// Unknown everywhere: an error after one refresh, not a hang.
	_, err = e.proxy.TopicName(ctx, [16]byte{0xde, 0xad, 15: 0xef})
	require.Error(t, err)
	require.NoError(t, ctx.Err())
}
