package kafkaproxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// advertiseHost is what the rewrite tests' proxy tells clients.
const advertiseHost = "127.0.0.1"

// fuzzNodes is how many node ids (0 to fuzzNodes-1) the rewrite tests'
// proxy has listeners for.
const fuzzNodes = 4

// newRewriteConn returns a conn whose proxy knows brokers 0 to fuzzNodes-1
// and then stops binding listeners (its context is cancelled), so that the
// node ids a fuzzer invents get an error instead of a listener each. It is
// enough for (*conn).rewrite; it has no sockets of its own.
func newRewriteConn(tb testing.TB) (*conn, map[int32]int32) {
	tb.Helper()
	p, err := New(Config{
		Listen:         "127.0.0.1:0",
		BrokerPortBase: -1,
		Upstreams:      []string{"127.0.0.1:1"},
		Logger:         slog.New(slog.DiscardHandler),
		Registerer:     prometheus.NewRegistry(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	ports := make(map[int32]int32)
	for id := range int32(fuzzNodes) {
		host, port, err := p.brokers.advertise(id, fmt.Sprintf("broker-%d.internal", id), 9092)
		if err != nil || host != advertiseHost {
			tb.Fatal(host, err)
		}
		ports[id] = port
	}
	p.cancel()
	tb.Cleanup(func() { p.brokers.closeAll(); p.wg.Wait() })
	return &conn{p: p}, ports
}

// rewrittenKeys are the API keys whose responses (*conn).rewrite changes.
var rewrittenKeys = []int16{
	keyMetadata, keyFindCoordinator, keyDescribeCluster, protocol.ProduceKey,
	protocol.FetchKey, protocol.ApiVersionsKey, keyShareFetch, keyShareAcknowledge,
}

// responseFrame is a response frame without its size prefix, as rewrite
// gets it: correlation id, header tags when flexible, body.
func responseFrame(corr int32, resp kmsg.Response) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(corr))
	if protocol.FlexibleResponseHeader(resp.Key(), resp.GetVersion()) {
		b = append(b, 0)
	}
	return resp.AppendTo(b)
}

// FuzzRewrite feeds arbitrary response bodies, for every API key and
// version the proxy rewrites, to (*conn).rewrite. It must never panic. When
// it returns a frame, the frame decodes with kmsg, keeps the broker's
// correlation id and header, and names no host but the proxy's, with the
// port of the proxy's listener for that node. When it passes a Produce or
// Fetch response on unchanged, kmsg finds no broker endpoints in it.
func FuzzRewrite(f *testing.F) {
	for _, seed := range rewriteSeeds() {
		f.Add(seed.which, seed.version, seed.frame)
	}
	f.Add(uint8(0), int16(12), []byte{0, 0, 0, 1})
	f.Add(uint8(5), int16(3), []byte{0, 0, 0, 1, 0, 35, 0})
	f.Add(uint8(4), int16(16), []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1})

	c, ports := newRewriteConn(f)
	f.Fuzz(func(t *testing.T, which uint8, version int16, frame []byte) {
		key := rewrittenKeys[int(which)%len(rewrittenKeys)]
		max := maxVersion(key)
		if version < 0 || version > max {
			version = int16(uint16(version) % uint16(max+1))
		}
		if mayStallKmsg(frame) {
			return // kmsg itself may spin for a minute; see mayStallKmsg
		}
		p := pending{key: key, version: version, corr: 1}
		out, err := c.rewrite(p, frame)
		if err != nil {
			if out != nil {
				t.Fatalf("%s v%d: a frame came with the error %v", protocol.KeyName(key), version, err)
			}
			return
		}
		if out == nil {
			checkPassedOn(t, key, version, frame)
			return
		}
		checkRewritten(t, key, version, frame, out, ports)
	})
}

// checkPassedOn checks a response rewrite left alone: only Produce and
// Fetch may be passed on, and only without leader endpoints.
func checkPassedOn(t *testing.T, key, version int16, frame []byte) {
	t.Helper()
	if key != protocol.ProduceKey && key != protocol.FetchKey {
		t.Fatalf("%s v%d response passed on without rewriting", protocol.KeyName(key), version)
	}
	off, err := protocol.ResponseBodyOffset(frame, protocol.FlexibleResponseHeader(key, version))
	if err != nil {
		return
	}
	if (key == protocol.ProduceKey && version < 10) || (key == protocol.FetchKey && version < 16) {
		// No endpoints in the schema. kmsg reads a top-level tag 0 as
		// Brokers at any flexible version, but a broker sends it only
		// from Produce v10 and Fetch v16 (KIP-951); the proxy checks
		// those versions only.
		return
	}
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if resp.ReadFrom(frame[off:]) != nil {
		return // the client's decoder will refuse it too
	}
	for _, h := range hosts(resp) {
		t.Fatalf("%s v%d passed on unchanged with broker %d at %s:%d", protocol.KeyName(key), version, h.node, h.host, h.port)
	}
}

// checkRewritten checks a frame rewrite made.
func checkRewritten(t *testing.T, key, version int16, in, out []byte, ports map[int32]int32) {
	t.Helper()
	name := fmt.Sprintf("%s v%d", protocol.KeyName(key), version)
	if len(out) < 8 || int(binary.BigEndian.Uint32(out)) != len(out)-4 {
		t.Fatalf("%s: size prefix does not match a %d-byte frame", name, len(out))
	}
	flexible := protocol.FlexibleResponseHeader(key, version)
	inOff, err := protocol.ResponseBodyOffset(in, flexible)
	if err != nil {
		t.Fatalf("%s: rewrote a frame whose header is malformed: %v", name, err)
	}
	outOff, err := protocol.ResponseBodyOffset(out[4:], flexible)
	if err != nil || string(out[4:4+outOff]) != string(in[:inOff]) {
		t.Fatalf("%s: response header changed from %x to %x (%v)", name, in[:inOff], out[4:4+outOff], err)
	}
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if key == protocol.ApiVersionsKey && int16(binary.BigEndian.Uint16(out[8:])) == kerr.UnsupportedVersion.Code {
		resp.SetVersion(0) // KIP-511: answered at v0
	}
	if err := resp.ReadFrom(out[4+outOff:]); err != nil {
		t.Fatalf("%s: the rewritten frame does not decode: %v", name, err)
	}
	for _, h := range hosts(resp) {
		if !h.rewritable {
			continue
		}
		if h.host != advertiseHost || h.port != ports[h.node] {
			t.Fatalf("%s: broker %d is named as %s:%d, want %s:%d", name, h.node, h.host, h.port, advertiseHost, ports[h.node])
		}
	}
	if av, ok := resp.(*kmsg.ApiVersionsResponse); ok {
		for _, k := range av.ApiKeys {
			max, known := protocol.MaxVersion(k.ApiKey)
			if !known || k.MaxVersion > max || k.MinVersion > k.MaxVersion || (k.ApiKey == keyDescribeQuorum && k.MaxVersion > describeQuorumMax) {
				t.Fatalf("%s: advertises %s v%d-v%d", name, protocol.KeyName(k.ApiKey), k.MinVersion, k.MaxVersion)
			}
		}
	}
}

// namedHost is one broker address in a response.
type namedHost struct {
	node       int32
	host       string
	port       int32
	rewritable bool // false where the proxy leaves the entry as the broker sent it
}

// hosts lists every broker address in resp.
func hosts(resp kmsg.Response) []namedHost {
	var out []namedHost
	add := func(node int32, host string, port int32) { out = append(out, namedHost{node, host, port, true}) }
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for _, b := range r.Brokers {
			add(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.FindCoordinatorResponse:
		// An errored coordinator, or one without a node id or host, is
		// passed on as the broker sent it; clients do not connect to it.
		if r.Version <= 3 {
			out = append(out, namedHost{r.NodeID, r.Host, r.Port, r.ErrorCode == 0 && r.NodeID >= 0 && r.Host != ""})
		}
		for _, co := range r.Coordinators {
			out = append(out, namedHost{co.NodeID, co.Host, co.Port, co.ErrorCode == 0 && co.NodeID >= 0 && co.Host != ""})
		}
	case *kmsg.DescribeClusterResponse:
		for _, b := range r.Brokers {
			add(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.ProduceResponse:
		for _, b := range r.Brokers {
			add(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.FetchResponse:
		for _, b := range r.Brokers {
			add(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.ShareFetchResponse:
		for _, b := range r.NodeEndpoints {
			add(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.ShareAcknowledgeResponse:
		for _, b := range r.NodeEndpoints {
			add(b.NodeID, b.Host, b.Port)
		}
	}
	return out
}

// mayStallKmsg reports whether b holds an unsigned varint of four or more
// bytes (2^21 or more) anywhere. kmsg v1.15.0's tagged-field loops
// (internalReadTags in api.go, and the generated readers) keep counting down
// a tag count after the reader has run dry, so a count near 2^32 spins for
// about a minute. Such inputs are kept from rewrite, which decodes with kmsg.
func mayStallKmsg(b []byte) bool {
	for i := 0; i+2 < len(b); i++ {
		if b[i]&b[i+1]&b[i+2]&0x80 != 0 {
			return true
		}
	}
	return false
}

type rewriteSeed struct {
	which   uint8
	version int16
	frame   []byte
}

// rewriteSeeds are kmsg-encoded responses naming brokers, for every key
// rewrite handles at a spread of versions. Values avoid -1 so that the
// seeds pass mayStallKmsg.
func rewriteSeeds() []rewriteSeed {
	var seeds []rewriteSeed
	whichOf := func(key int16) uint8 {
		for i, k := range rewrittenKeys {
			if k == key {
				return uint8(i)
			}
		}
		panic(key)
	}
	add := func(resp kmsg.Response) {
		seeds = append(seeds, rewriteSeed{whichOf(resp.Key()), resp.GetVersion(), responseFrame(7, resp)})
	}
	host := func(i int) string { return fmt.Sprintf("broker-%d.internal", i) }
	for _, v := range []int16{0, 1, 7, 9, 12, 13} {
		add(metadataResponse(v, 3, 2))
	}
	for _, v := range []int16{0, 2, 3, 4, 6} {
		r := kmsg.NewPtrFindCoordinatorResponse()
		r.SetVersion(v)
		r.NodeID, r.Host, r.Port = 1, host(1), 9092
		for i := range 2 {
			co := kmsg.NewFindCoordinatorResponseCoordinator()
			co.Key, co.NodeID, co.Host, co.Port = fmt.Sprint("group-", i), int32(i), host(i), 9092
			r.Coordinators = append(r.Coordinators, co)
		}
		add(r)
	}
	for _, v := range []int16{0, 1, 2} {
		r := kmsg.NewPtrDescribeClusterResponse()
		r.SetVersion(v)
		r.ClusterID, r.ControllerID, r.EndpointType, r.ClusterAuthorizedOperations = "c", 0, 1, 0
		for i := range 3 {
			b := kmsg.NewDescribeClusterResponseBroker()
			b.NodeID, b.Host, b.Port = int32(i), host(i), 9092
			r.Brokers = append(r.Brokers, b)
		}
		add(r)
	}
	for _, v := range []int16{8, 9, 10, 11, 13} {
		r := kmsg.NewPtrProduceResponse()
		r.SetVersion(v)
		t := kmsg.NewProduceResponseTopic()
		t.Topic, t.TopicID = "orders", [16]byte{1}
		p := kmsg.NewProduceResponseTopicPartition()
		p.BaseOffset, p.LogAppendTime, p.LogStartOffset = 1, 2, 3
		t.Partitions = append(t.Partitions, p)
		r.Topics = append(r.Topics, t)
		if v >= 10 {
			b := kmsg.NewProduceResponseBroker()
			b.NodeID, b.Host, b.Port = 2, host(2), 9092
			r.Brokers = append(r.Brokers, b)
		}
		add(r)
	}
	for _, v := range []int16{11, 12, 13, 15, 16, 17, 18} {
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(v)
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = "orders", [16]byte{1}
		p := kmsg.NewFetchResponseTopicPartition()
		p.HighWatermark, p.LastStableOffset, p.LogStartOffset, p.PreferredReadReplica = 5, 5, 0, 0
		p.RecordBatches = []byte("record batches")
		p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{} // not null (-1)
		t.Partitions = append(t.Partitions, p)
		r.Topics = append(r.Topics, t)
		if v >= 16 {
			b := kmsg.NewFetchResponseBroker()
			b.NodeID, b.Host, b.Port = 3, host(3), 9092
			r.Brokers = append(r.Brokers, b)
		}
		add(r)
	}
	for _, v := range []int16{0, 3, 4} {
		r := kmsg.NewPtrApiVersionsResponse()
		r.SetVersion(v)
		for _, k := range []int16{0, 1, 3, 18, keyDescribeQuorum, 999} {
			ak := kmsg.NewApiVersionsResponseApiKey()
			ak.ApiKey, ak.MaxVersion = k, 99
			r.ApiKeys = append(r.ApiKeys, ak)
		}
		add(r)
	}
	for _, v := range []int16{0, 1, 2} {
		r := kmsg.NewPtrShareFetchResponse()
		r.SetVersion(v)
		r.AcquisitionLockTimeoutMillis = 30000
		b := kmsg.NewShareFetchResponseNodeEndpoint()
		b.NodeID, b.Host, b.Port = 1, host(1), 9092
		r.NodeEndpoints = append(r.NodeEndpoints, b)
		add(r)
		a := kmsg.NewPtrShareAcknowledgeResponse()
		a.SetVersion(v)
		e := kmsg.NewShareAcknowledgeResponseNodeEndpoint()
		e.NodeID, e.Host, e.Port = 0, host(0), 9092
		a.NodeEndpoints = append(a.NodeEndpoints, e)
		add(a)
	}
	return seeds
}

// metadataResponse builds a Metadata response naming brokers 0 to
// brokers-1 and topics topics.
func metadataResponse(version int16, brokers, topics int) *kmsg.MetadataResponse {
	r := kmsg.NewPtrMetadataResponse()
	r.SetVersion(version)
	r.ClusterID, r.ControllerID = kmsg.StringPtr("cluster"), 0
	for i := range brokers {
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port, b.Rack = int32(i), fmt.Sprintf("broker-%d.internal", i), 9092, kmsg.StringPtr("rack")
		r.Brokers = append(r.Brokers, b)
	}
	for i := range topics {
		t := kmsg.NewMetadataResponseTopic()
		t.Topic, t.TopicID = kmsg.StringPtr(fmt.Sprintf("topic-%d", i)), [16]byte{byte(i + 1), 7}
		t.AuthorizedOperations = 0
		for p := range 3 {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition, mp.Leader, mp.LeaderEpoch = int32(p), int32(p%max(brokers, 1)), 1
			mp.Replicas, mp.ISR = []int32{0, 1, 2}, []int32{0, 1, 2}
			t.Partitions = append(t.Partitions, mp)
		}
		r.Topics = append(r.Topics, t)
	}
	r.AuthorizedOperations = 0
	return r
}

func TestRewriteSeeds(t *testing.T) {
	// Every seed is rewritten (or, for Produce and Fetch without
	// endpoints, passed on) and passes FuzzRewrite's checks; seeds that
	// mayStallKmsg would skip test nothing.
	c, ports := newRewriteConn(t)
	for _, s := range rewriteSeeds() {
		key := rewrittenKeys[s.which]
		name := fmt.Sprintf("%s v%d", protocol.KeyName(key), s.version)
		if mayStallKmsg(s.frame) {
			t.Fatalf("%s: seed would be skipped", name)
		}
		out, err := c.rewrite(pending{key: key, version: s.version, corr: 7}, s.frame)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		passesOn := (key == protocol.ProduceKey && s.version < 10) || (key == protocol.FetchKey && s.version < 16)
		if passesOn {
			if out != nil {
				t.Fatalf("%s: rewritten though it carries no endpoints", name)
			}
			checkPassedOn(t, key, s.version, s.frame)
			continue
		}
		if out == nil {
			t.Fatalf("%s: not rewritten", name)
		}
		checkRewritten(t, key, s.version, s.frame, out, ports)
		if key != protocol.ApiVersionsKey {
			resp := kmsg.ResponseForKey(key)
			resp.SetVersion(s.version)
			off, _ := protocol.ResponseBodyOffset(out[4:], protocol.FlexibleResponseHeader(key, s.version))
			if err := resp.ReadFrom(out[4+off:]); err != nil {
				t.Fatal(err)
			}
			if len(hosts(resp)) == 0 && key != keyFindCoordinator {
				t.Fatalf("%s: seed names no broker", name)
			}
		}
	}
}
