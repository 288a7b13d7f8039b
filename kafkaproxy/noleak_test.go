package kafkaproxy_test

// No upstream address reaches a client: a full workload runs through the
// proxy, then every response the proxy wrote is checked, as text and as
// decoded Kafka messages, for the brokers' real addresses.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// noleakConn sends hand-made requests at exact versions to one proxy
// listener and decodes the answers.
type noleakConn struct {
	t    testing.TB
	c    net.Conn
	corr int32
	f    *kmsg.RequestFormatter
}

func dialNoleak(t testing.TB, addr string) *noleakConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &noleakConn{t: t, c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("pipemesh-noleak"))}
}

// roundTrip writes one request frame and returns the response body (after
// the size prefix), checking its correlation id.
func (n *noleakConn) roundTrip(frame []byte, corr int32) []byte {
	n.t.Helper()
	require.NoError(n.t, n.c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := n.c.Write(frame)
	require.NoError(n.t, err)
	var sz [4]byte
	_, err = io.ReadFull(n.c, sz[:])
	require.NoError(n.t, err)
	body := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err = io.ReadFull(n.c, body)
	require.NoError(n.t, err)
	require.Equal(n.t, corr, protocol.ResponseCorrelationID(body))
	return body
}

// do sends req at its version and decodes the response.
func (n *noleakConn) do(req kmsg.Request) kmsg.Response {
	n.t.Helper()
	n.corr++
	body := n.roundTrip(n.f.AppendRequest(nil, req, n.corr), n.corr)
	resp := req.ResponseKind()
	off, err := protocol.ResponseBodyOffset(body, protocol.FlexibleResponseHeader(req.Key(), req.GetVersion()))
	require.NoError(n.t, err)
	if req.Key() == protocol.ApiVersionsKey && len(body) >= off+2 &&
		int16(binary.BigEndian.Uint16(body[off:])) == kerr.UnsupportedVersion.Code {
		resp.SetVersion(0)
	}
	require.NoError(n.t, resp.ReadFrom(body[off:]), "%s v%d", kmsg.NameForKey(req.Key()), req.GetVersion())
	return resp
}

// rawApiVersions sends an ApiVersions request at a version newer than kmsg
// knows, which the proxy must answer itself (UNSUPPORTED_VERSION at v0).
func (n *noleakConn) rawApiVersions(version int16) *kmsg.ApiVersionsResponse {
	n.t.Helper()
	n.corr++
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(protocol.ApiVersionsKey))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(n.corr))
	b = binary.BigEndian.AppendUint16(b, 6) // client id
	b = append(b, "noleak"...)
	b = append(b, 0)                 // header tags
	b = append(b, 2, 'x', 2, '1', 0) // client software name and version, body tags
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	body := n.roundTrip(b, n.corr)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	require.NoError(n.t, resp.ReadFrom(body[4:]))
	return resp
}

// noleakEndpoint is one broker address found in a decoded response.
type noleakEndpoint struct {
	path   string
	nodeID int32 // -1 when the struct has no NodeID
	host   string
	port   int32
}

// noleakEndpoints walks a decoded kmsg response and returns every struct
// that has an int32 Port (with its Host and NodeID if it has them), at any
// depth. Empty entries (no host, port <= 0: a coordinator error) are left
// out.
func noleakEndpoints(resp kmsg.Response) []noleakEndpoint {
	var out []noleakEndpoint
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), path)
			}
		case reflect.Slice, reflect.Array:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				return // bytes: record batches, uuids
			}
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			}
		case reflect.Struct:
			ty := v.Type()
			if f, ok := ty.FieldByName("Port"); ok && f.Type.Kind() == reflect.Int32 {
				ep := noleakEndpoint{path: path, nodeID: -1, port: int32(v.FieldByIndex(f.Index).Int())}
				if h, ok := ty.FieldByName("Host"); ok && h.Type.Kind() == reflect.String {
					ep.host = v.FieldByIndex(h.Index).String()
				}
				if id, ok := ty.FieldByName("NodeID"); ok && id.Type.Kind() == reflect.Int32 {
					ep.nodeID = int32(v.FieldByIndex(id.Index).Int())
				}
				if ep.host != "" || ep.port > 0 {
					out = append(out, ep)
				}
			}
			for i := range ty.NumField() {
				if f := ty.Field(i); f.IsExported() {
					walk(v.Field(i), path+"."+f.Name)
				}
			}
		}
	}
	walk(reflect.ValueOf(resp), fmt.Sprintf("%T", resp))
	return out
}

// noleakFrames splits a captured stream into frames (size prefix
// included). A connection cut mid-frame leaves a truncated tail, which is
// returned separately.
func noleakFrames(stream []byte) (frames [][]byte, tail []byte) {
	for len(stream) >= 4 {
		n := int(binary.BigEndian.Uint32(stream))
		if len(stream) < 4+n {
			break
		}
		frames = append(frames, stream[:4+n])
		stream = stream[4+n:]
	}
	return frames, stream
}

// TestNoUpstreamAddressLeaks runs metadata, produce (acks=all with leader
// moves, and acks=0), a consumer group, a transaction and hand-made admin
// requests at every version through the proxy, then decodes every response
// the proxy wrote on every client connection and checks that no upstream
// broker address or port is in any of them.
func TestNoUpstreamAddressLeaks(t *testing.T) {
	const (
		topic      = "leak"
		topic0     = "leak-acks0"
		partitions = 6
		perPhase   = 1000
		acks0      = 500
	)
	e := startEnv(t, withTopic(topic, partitions), withTopic(topic0, 3))
	e.capture.recordRequests(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The workload.
	want := map[string]e2eWant{}
	recs := func(prefix string, n int) []*kgo.Record {
		out := make([]*kgo.Record, n)
		for i := range out {
			r, w := e2eRecord(prefix, i)
			want[string(r.Key)] = w
			out[i] = r
		}
		return out
	}
	phase1, phase2, phase0 := recs("leak1", perPhase), recs("leak2", perPhase), recs("leak0", acks0)
	txnRec := recs("leak-txn", 1)[0]
	sink := newE2ESink(want)

	cons := e2eClient(t, e, kgo.ConsumeTopics(topic, topic0), kgo.ConsumerGroup("g-leak"),
		e2eNoReset(), kgo.FetchMaxWait(250*time.Millisecond))
	consDone := make(chan struct{})
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		defer close(consDone)
		for cctx.Err() == nil {
			cons.PollFetches(cctx).EachRecord(sink.add)
		}
	}()
	defer func() { ccancel(); <-consDone }()

	// A share group (KIP-932) reads the topic too: ShareFetch answers carry
	// leader endpoints as well. It starts at the earliest offset.
	adm := e2eClient(t, e)
	setCfg := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, "sg-leak"
	cfg := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = "share.auto.offset.reset", kmsg.StringPtr("earliest")
	res.Configs = append(res.Configs, cfg)
	setCfg.Resources = append(setCfg.Resources, res)
	setResp, err := setCfg.RequestWith(ctx, adm)
	require.NoError(t, err)
	require.Zero(t, setResp.Resources[0].ErrorCode)
	share := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ShareGroup("sg-leak"), kgo.FetchMaxWait(250*time.Millisecond))
	var shareMu sync.Mutex
	shared := map[string]bool{}
	shareDone := make(chan struct{})
	go func() {
		defer close(shareDone)
		for cctx.Err() == nil {
			share.PollFetches(cctx).EachRecord(func(r *kgo.Record) {
				shareMu.Lock()
				shared[string(r.Key)] = true
				shareMu.Unlock()
			})
		}
	}()
	defer func() { ccancel(); <-shareDone }()
	sharedAll := func(n int) func() bool {
		return func() bool {
			shareMu.Lock()
			defer shareMu.Unlock()
			return len(shared) >= n
		}
	}

	prod := e2eClient(t, e, kgo.DefaultProduceTopic(topic))
	require.NoError(t, prod.ProduceSync(ctx, phase1...).FirstErr())
	require.Eventually(t, func() bool { return sink.count() >= perPhase }, 60*time.Second, 10*time.Millisecond)
	require.Eventually(t, sharedAll(perPhase), 60*time.Second, 10*time.Millisecond, "share group got phase 1")
	// Move every leader: the next Produce and Fetch go to the old leaders
	// and come back NOT_LEADER with the new leader's endpoint (KIP-951).
	for p := range int32(partitions) {
		require.NoError(t, e.cluster.MoveTopicPartition(topic, p, (e.cluster.LeaderFor(topic, p)+1)%3))
	}
	require.NoError(t, prod.ProduceSync(ctx, phase2...).FirstErr())

	p0 := e2eClient(t, e, kgo.DefaultProduceTopic(topic0), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	require.NoError(t, p0.ProduceSync(ctx, phase0...).FirstErr())

	txn := e2eClient(t, e, kgo.DefaultProduceTopic(topic), kgo.TransactionalID("leak-txn"))
	require.NoError(t, txn.BeginTransaction())
	require.NoError(t, txn.ProduceSync(ctx, txnRec).FirstErr())
	require.NoError(t, txn.EndTransaction(ctx, kgo.TryCommit))

	// The acks=0 records have no acknowledgement; that the consumer gets
	// them all shows the proxy did not hang the producer's connection
	// waiting for a response that never comes.
	require.Eventually(t, func() bool { return sink.count() >= len(want) }, 60*time.Second, 10*time.Millisecond,
		"consumed fewer records than the %d produced", len(want))
	require.Eventually(t, sharedAll(2*perPhase+1), 60*time.Second, 10*time.Millisecond, "share group got everything")
	ccancel()
	<-consDone
	<-shareDone
	sink.check(t)

	// Admin requests through a kgo client, at the versions it picks.
	dc, err := kmsg.NewPtrDescribeClusterRequest().RequestWith(ctx, adm)
	require.NoError(t, err)
	require.Len(t, dc.Brokers, 3)
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorType = 1
	fc.CoordinatorKeys = []string{"leak-txn"}
	_, err = fc.RequestWith(ctx, adm)
	require.NoError(t, err)

	// And hand-made, at every version, on the bootstrap listener and on
	// each broker listener.
	addrs := []string{e.addr}
	for _, a := range e.proxy.BrokerAddrs() {
		addrs = append(addrs, a)
	}
	for _, addr := range addrs {
		n := dialNoleak(t, addr)
		for v := int16(0); v <= 5; v++ {
			req := kmsg.NewPtrApiVersionsRequest()
			req.Version = v
			req.ClientSoftwareName, req.ClientSoftwareVersion = "noleak", "1"
			resp := n.do(req).(*kmsg.ApiVersionsResponse)
			require.Zero(t, resp.ErrorCode, "ApiVersions v%d", v)
		}
		tooNew := n.rawApiVersions(6)
		require.Equal(t, kerr.UnsupportedVersion.Code, tooNew.ErrorCode)
		for v := int16(0); v <= 13; v++ {
			req := kmsg.NewPtrMetadataRequest()
			req.Version = v
			if v == 0 {
				req.Topics = []kmsg.MetadataRequestTopic{} // v0: empty means all
			}
			resp := n.do(req).(*kmsg.MetadataResponse)
			require.Len(t, resp.Brokers, 3, "Metadata v%d", v)
		}
		for v := int16(0); v <= 6; v++ {
			for _, ct := range []int8{0, 1} {
				if v == 0 && ct == 1 {
					continue // v0 knows only groups
				}
				req := kmsg.NewPtrFindCoordinatorRequest()
				req.Version = v
				req.CoordinatorType = ct
				req.CoordinatorKey = "g-leak"
				req.CoordinatorKeys = []string{"g-leak", "another-group"}
				if ct == 1 {
					req.CoordinatorKey = "leak-txn"
					req.CoordinatorKeys = []string{"leak-txn", "another-txn"}
				}
				resp := n.do(req).(*kmsg.FindCoordinatorResponse)
				if v <= 3 {
					require.Zero(t, resp.ErrorCode, "FindCoordinator v%d type %d", v, ct)
				} else {
					require.Len(t, resp.Coordinators, 2, "FindCoordinator v%d type %d", v, ct)
					for _, c := range resp.Coordinators {
						require.Zero(t, c.ErrorCode, "FindCoordinator v%d type %d", v, ct)
					}
				}
			}
		}
		for v := int16(0); v <= 2; v++ {
			req := kmsg.NewPtrDescribeClusterRequest()
			req.Version = v
			resp := n.do(req).(*kmsg.DescribeClusterResponse)
			require.Zero(t, resp.ErrorCode, "DescribeCluster v%d", v)
			require.Len(t, resp.Brokers, 3, "DescribeCluster v%d", v)
		}
		n.c.Close()
	}

	// Close every client so the capture is complete.
	for _, cl := range []*kgo.Client{cons, share, prod, p0, txn, adm} {
		cl.Close()
	}
	require.Eventually(t, func() bool {
		return proxyCounter(t, e, "pipemesh_kafka_connections", "state", "open") == 0
	}, 10*time.Second, 10*time.Millisecond, "the proxy still has client connections open")

	// The checks.
	upstream := e.cluster.ListenAddrs()
	upPorts := map[int32]string{}
	for _, a := range upstream {
		_, ps, err := net.SplitHostPort(a)
		require.NoError(t, err)
		p, err := strconv.Atoi(ps)
		require.NoError(t, err)
		upPorts[int32(p)] = a
	}
	advertised := e.proxy.BrokerAddrs()
	require.Len(t, advertised, 3)
	advHost, _, err := net.SplitHostPort(e.addr)
	require.NoError(t, err)

	type keyVersion struct{ key, version int16 }
	checked := map[keyVersion]int{} // endpoints checked, by API and version
	responses := map[int16]int{}    // responses decoded, by API
	reqs, resps := e.capture.exchanges()
	require.NotEmpty(t, resps)
	for i := range resps {
		sent := map[int32]keyVersion{}
		frames, tail := noleakFrames(reqs[i])
		assert.Empty(t, tail, "connection %d: client sent a truncated request", i)
		for _, f := range frames {
			h, err := protocol.ParseRequestHeader(f[4:])
			require.NoError(t, err)
			sent[h.CorrelationID] = keyVersion{h.Key, h.Version}
		}
		frames, tail = noleakFrames(resps[i])
		if len(tail) > 0 {
			t.Logf("connection %d: %d bytes of a response cut off by a closing client", i, len(tail))
		}
		for _, f := range frames {
			for _, a := range upstream {
				require.False(t, bytes.Contains(f, []byte(a)), "connection %d: a response holds upstream address %s", i, a)
			}
			body := f[4:]
			corr := protocol.ResponseCorrelationID(body)
			kv, ok := sent[corr]
			require.True(t, ok, "connection %d: response with correlation id %d matches no request", i, corr)
			delete(sent, corr)
			resp := kmsg.ResponseForKey(kv.key)
			require.NotNil(t, resp, "connection %d: response to unknown key %d", i, kv.key)
			resp.SetVersion(kv.version)
			off, err := protocol.ResponseBodyOffset(body, protocol.FlexibleResponseHeader(kv.key, kv.version))
			require.NoError(t, err)
			if kv.key == protocol.ApiVersionsKey && int16(binary.BigEndian.Uint16(body[off:])) == kerr.UnsupportedVersion.Code {
				resp.SetVersion(0)
			}
			name := fmt.Sprintf("%s v%d", kmsg.NameForKey(kv.key), kv.version)
			require.NoError(t, resp.ReadFrom(body[off:]), "connection %d: decoding %s", i, name)
			responses[kv.key]++
			for _, ep := range noleakEndpoints(resp) {
				where := fmt.Sprintf("connection %d, %s, %s", i, name, ep.path)
				up, leaked := upPorts[ep.port]
				require.False(t, leaked, "%s: upstream port %d (%s) reached the client", where, ep.port, up)
				require.Equal(t, advHost, ep.host, "%s: host", where)
				got := net.JoinHostPort(ep.host, strconv.Itoa(int(ep.port)))
				if ep.nodeID >= 0 {
					require.Equal(t, advertised[ep.nodeID], got, "%s: node %d", where, ep.nodeID)
				} else {
					require.Contains(t, advertised, got, "%s", where)
				}
				checked[kv]++
			}
		}
		// Requests without a response: acks=0 Produce, and fetches a
		// closing client gave up on.
		for corr, kv := range sent {
			if kv.key != protocol.ProduceKey && kv.key != protocol.FetchKey {
				t.Errorf("connection %d: no response to %s v%d (correlation id %d)", i, kmsg.NameForKey(kv.key), kv.version, corr)
			}
		}
	}

	// Not vacuous: every kind of response that names brokers was seen and
	// checked, at every version sent by hand.
	count := func(key int16, fromV, toV int16) int {
		n := 0
		for kv, c := range checked {
			if kv.key == key && kv.version >= fromV && kv.version <= toV {
				n += c
			}
		}
		return n
	}
	for v := int16(0); v <= 13; v++ {
		assert.Positive(t, count(3, v, v), "Metadata v%d endpoints checked", v)
	}
	for v := int16(0); v <= 6; v++ {
		assert.Positive(t, count(10, v, v), "FindCoordinator v%d endpoints checked", v)
	}
	for v := int16(0); v <= 2; v++ {
		assert.Positive(t, count(60, v, v), "DescribeCluster v%d endpoints checked", v)
	}
	assert.Positive(t, count(protocol.ProduceKey, 10, 13), "Produce leader endpoints (KIP-951) checked")
	assert.Positive(t, count(protocol.FetchKey, 16, 18), "Fetch leader endpoints (KIP-951) checked")
	assert.Positive(t, count(78, 0, 2), "ShareFetch leader endpoints checked")
	assert.Positive(t, responses[protocol.ApiVersionsKey])
	t.Logf("%d connections; responses decoded by API: %v; endpoints checked: %v", len(resps), responses, checked)
	e2eNoProtocolErrors(t, e)
}
