package sink

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// rawConn speaks requests at exactly the versions given, which kgo would
// negotiate up.
type rawConn struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	corr int32
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

var formatter = kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))

// send writes req and returns its correlation id.
func (c *rawConn) send(req kmsg.Request) int32 {
	c.t.Helper()
	c.corr++
	_, err := c.nc.Write(formatter.AppendRequest(nil, req, c.corr))
	require.NoError(c.t, err)
	return c.corr
}

// frame reads one response frame.
func (c *rawConn) frame() ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(c.br, sz[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err := io.ReadFull(c.br, b)
	return b, err
}

// recv reads the response to req sent with correlation id corr.
func (c *rawConn) recv(req kmsg.Request, corr int32) kmsg.Response {
	c.t.Helper()
	b, err := c.frame()
	require.NoError(c.t, err)
	require.Equal(c.t, corr, int32(binary.BigEndian.Uint32(b)), "correlation id")
	off, err := protocol.ResponseBodyOffset(b, protocol.FlexibleResponseHeader(req.Key(), req.GetVersion()))
	require.NoError(c.t, err)
	resp := req.ResponseKind()
	require.NoError(c.t, resp.ReadFrom(b[off:]), "decoding %s v%d response", kmsg.NameForKey(req.Key()), req.GetVersion())
	return resp
}

func (c *rawConn) request(req kmsg.Request) kmsg.Response {
	c.t.Helper()
	return c.recv(req, c.send(req))
}

// requireClosed checks that the sink closed the connection: a read ends
// without a response.
func (c *rawConn) requireClosed() {
	c.t.Helper()
	b, err := c.frame()
	require.Error(c.t, err, "want the connection closed, got a %d-byte response", len(b))
	var ne net.Error
	require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "the sink did not close the connection: %v", err)
}

// TestApiVersions checks the advertised keys and versions at every
// ApiVersions version, and that a request newer than the sink knows gets
// a v0 UNSUPPORTED_VERSION answer naming ApiVersions' versions (KIP-511).
func TestApiVersions(t *testing.T) {
	s := startSink(t, Config{})
	for v := range maxVersion(protocol.ApiVersionsKey) + 1 {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = v
		req.ClientSoftwareName, req.ClientSoftwareVersion = "raw", "1"
		resp := dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.ApiVersionsResponse)
		require.Zero(t, resp.ErrorCode)
		got := map[int16][2]int16{}
		for _, k := range resp.ApiKeys {
			got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
		}
		assert.Equal(t, map[int16][2]int16{
			0:  {3, maxVersion(0)},
			1:  {4, maxVersion(1)},
			2:  {0, maxVersion(2)},
			3:  {0, maxVersion(3)},
			18: {0, maxVersion(18)},
			19: {0, maxVersion(19)},
			20: {0, maxVersion(20)},
			22: {0, maxVersion(22)},
		}, got, "ApiVersions v%d", v)
	}

	c := dialRaw(t, s.Addrs()[1])
	frame := []byte{0, 0, 0, 0, 0, 18, 0, 99, 0, 0, 0, 7, 0, 3, 'n', 'e', 'w', 0, 1, 2, 3}
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	_, err := c.nc.Write(frame)
	require.NoError(t, err)
	b, err := c.frame()
	require.NoError(t, err)
	require.Equal(t, int32(7), int32(binary.BigEndian.Uint32(b)))
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	require.NoError(t, resp.ReadFrom(b[4:]))
	assert.Equal(t, kerr.UnsupportedVersion.Code, resp.ErrorCode)
	assert.Equal(t, []kmsg.ApiVersionsResponseApiKey{{ApiKey: 18, MinVersion: 0, MaxVersion: maxVersion(18)}}, resp.ApiKeys)
	// The connection stays open for the retry at a version we speak.
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	assert.Zero(t, c.request(req).(*kmsg.ApiVersionsResponse).ErrorCode)
}

// TestBadInputClosesConnection sends frames the sink must not answer: each
// closes its connection without a response and without taking the sink
// down, which still answers on a new connection.
func TestBadInputClosesConnection(t *testing.T) {
	s := startSink(t, Config{})
	withSize := func(body ...byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	header := func(key, version int16) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(key))
		b = binary.BigEndian.AppendUint16(b, uint16(version))
		b = binary.BigEndian.AppendUint32(b, 1)
		return append(b, 0xff, 0xff) // null client id
	}
	flexHeader := func(key, version int16) []byte { return append(header(key, version), 0) }
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"frame shorter than a header", withSize(0, 1, 2)},
		{"negative size", []byte{0xff, 0xff, 0xff, 0xf0, 1, 2, 3}},
		{"size above the maximum", []byte{0x7f, 0xff, 0xff, 0xff}},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"TLS", []byte{0x16, 0x03, 0x01, 0x00, 0x10, 1, 2, 3}},
		{"client id overruns the frame", withSize(0, 3, 0, 1, 0, 0, 0, 1, 0, 50, 'x')},
		{"unknown key", withSize(header(999, 0)...)},
		{"key not served", withSize(header(10, 3)...)}, // FindCoordinator
		{"Produce v2", withSize(header(produceKey, 2)...)},
		{"Fetch v3", withSize(header(fetchKey, 3)...)},
		{"truncated Produce", withSize(append(flexHeader(produceKey, 9), 0, 0xff, 0xff, 0, 0, 0, 1, 5)...)},
		{"truncated Fetch", withSize(append(flexHeader(fetchKey, 12), 1, 2, 3)...)},
		{"truncated Metadata", withSize(append(header(metadataKey, 1), 0, 0, 0, 5)...)},
		{"garbage Metadata topics count", withSize(append(header(metadataKey, 1), 0x7f, 0xff, 0xff, 0xff)...)},
		{"truncated CreateTopics", withSize(append(header(createTopicsKey, 0), 0, 0, 0, 1, 0)...)},
		{"truncated ListOffsets", withSize(append(header(listOffsetsKey, 1), 0xff)...)},
		{"truncated frame, then EOF", []byte{0, 0, 1, 0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.Addrs()[0])
			_, err := c.nc.Write(tc.bytes)
			require.NoError(t, err)
			if tc.name == "truncated frame, then EOF" {
				require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
			}
			c.requireClosed()
			req := kmsg.NewPtrApiVersionsRequest()
			assert.Zero(t, dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.ApiVersionsResponse).ErrorCode)
		})
	}
}

// TestPipelining sends many requests before reading any response: they
// are answered in order.
func TestPipelining(t *testing.T) {
	s := startSink(t, Config{})
	require.NoError(t, s.CreateTopic("pipe", 1))
	c := dialRaw(t, s.Addrs()[0])
	var reqs []kmsg.Request
	var corrs []int32
	for i := range 50 {
		var req kmsg.Request
		switch i % 3 {
		case 0:
			m := kmsg.NewPtrMetadataRequest()
			m.Version = 12
			req = m
		case 1:
			p := kmsg.NewPtrProduceRequest()
			p.Version, p.Acks, p.TimeoutMillis = 9, -1, 1000
			rt := kmsg.NewProduceRequestTopic()
			rt.Topic = "pipe"
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Records = testBatch(2, 20)
			rt.Partitions = append(rt.Partitions, rp)
			p.Topics = append(p.Topics, rt)
			req = p
		default:
			a := kmsg.NewPtrApiVersionsRequest()
			a.Version = 3
			req = a
		}
		reqs = append(reqs, req)
		corrs = append(corrs, c.send(req))
	}
	var next int64
	for i, req := range reqs {
		resp := c.recv(req, corrs[i])
		if p, ok := resp.(*kmsg.ProduceResponse); ok {
			sp := p.Topics[0].Partitions[0]
			require.Zero(t, sp.ErrorCode)
			assert.Equal(t, next, sp.BaseOffset)
			next += 2
		}
	}
}

// TestProduceErrors checks the per-partition errors of Produce: not the
// leader (with the leader's endpoint, KIP-951), unknown topic and
// partition, a batch that is not magic v2, and a topic id that does not
// exist (v13).
func TestProduceErrors(t *testing.T) {
	s := startSink(t, Config{Brokers: 3})
	require.NoError(t, s.CreateTopic("errs", 3))
	old := testBatch(1, 10)
	old[magicAt] = 1
	produce := func(version int16, topic string, id [16]byte, partition int32, records []byte) (*kmsg.ProduceResponse, kmsg.ProduceResponseTopicPartition) {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = version, 1, 1000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = partition, records
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.ProduceResponse)
		return resp, resp.Topics[0].Partitions[0]
	}
	resp, sp := produce(11, "errs", [16]byte{}, 1, testBatch(1, 10))
	assert.Equal(t, kerr.NotLeaderForPartition.Code, sp.ErrorCode)
	assert.Equal(t, int32(1), sp.CurrentLeader.LeaderID)
	require.Len(t, resp.Brokers, 1)
	assert.Equal(t, s.Addrs()[1], net.JoinHostPort(resp.Brokers[0].Host, strconv.Itoa(int(resp.Brokers[0].Port))))

	_, sp = produce(9, "nope", [16]byte{}, 0, testBatch(1, 10))
	assert.Equal(t, kerr.UnknownTopicOrPartition.Code, sp.ErrorCode)
	_, sp = produce(9, "errs", [16]byte{}, 3, testBatch(1, 10))
	assert.Equal(t, kerr.UnknownTopicOrPartition.Code, sp.ErrorCode)
	_, sp = produce(9, "errs", [16]byte{}, 0, old)
	assert.Equal(t, kerr.CorruptMessage.Code, sp.ErrorCode)
	_, sp = produce(13, "", [16]byte{1}, 0, testBatch(1, 10))
	assert.Equal(t, kerr.UnknownTopicID.Code, sp.ErrorCode)
	_, sp = produce(13, "", s.topics.byName("errs").id, 0, testBatch(4, 10))
	require.Zero(t, sp.ErrorCode)
	assert.Equal(t, int64(0), sp.BaseOffset)
}

// TestAcksZeroErrorCloses checks that an acks=0 produce that fails closes
// the connection, as Kafka does, since no response can carry the error.
func TestAcksZeroErrorCloses(t *testing.T) {
	s := startSink(t, Config{})
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks = 9, 0
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "nope"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = testBatch(1, 0)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	c := dialRaw(t, s.Addrs()[0])
	c.send(req)
	c.requireClosed()
}

// TestFetchLongPoll checks that a fetch with nothing to return waits for
// data, is woken by a produce to one of its partitions, and otherwise
// answers empty after MaxWaitMillis. Fetch v13+ names topics by id.
func TestFetchLongPoll(t *testing.T) {
	s := startSink(t, Config{Brokers: 1})
	require.NoError(t, s.CreateTopic("poll", 2))
	id := s.topics.byName("poll").id
	fetch := func(wait time.Duration) *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.Version = maxVersion(fetchKey)
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = int32(wait.Milliseconds()), 1, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.TopicID = id
		for p := range int32(2) {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.PartitionMaxBytes = p, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		return req
	}

	start := time.Now()
	resp := dialRaw(t, s.Addrs()[0]).request(fetch(300 * time.Millisecond)).(*kmsg.FetchResponse)
	assert.GreaterOrEqual(t, time.Since(start), 290*time.Millisecond, "an empty fetch waits MaxWaitMillis")
	require.Len(t, resp.Topics, 1)
	assert.Equal(t, id, resp.Topics[0].TopicID)
	for _, p := range resp.Topics[0].Partitions {
		assert.Zero(t, p.ErrorCode)
		assert.Empty(t, p.RecordBatches)
	}

	c := dialRaw(t, s.Addrs()[0])
	req := fetch(10 * time.Second)
	corr := c.send(req)
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	_, _, code := s.topics.byName("poll").parts[1].append(testBatch(3, 10))
	require.Zero(t, code)
	resp = c.recv(req, corr).(*kmsg.FetchResponse)
	assert.Less(t, time.Since(start), 5*time.Second, "a produce must wake the fetch")
	p1 := resp.Topics[0].Partitions[1]
	assert.Equal(t, int64(3), p1.HighWatermark)
	assert.Len(t, p1.RecordBatches, batchHeaderBytes+10)

	// Unknown topic ids answer at once.
	bad := fetch(10 * time.Second)
	bad.Topics[0].TopicID = [16]byte{9}
	start = time.Now()
	resp = dialRaw(t, s.Addrs()[0]).request(bad).(*kmsg.FetchResponse)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, kerr.UnknownTopicID.Code, resp.Topics[0].Partitions[0].ErrorCode)
}

// TestFetchLimits checks KIP-74: whole batches up to the partition and
// response limits, and at least one batch for the first partition with
// data even when it is larger than both.
func TestFetchLimits(t *testing.T) {
	s := startSink(t, Config{Brokers: 1})
	require.NoError(t, s.CreateTopic("limits", 2))
	parts := s.topics.byName("limits").parts
	const size = batchHeaderBytes + 1000
	for range 10 {
		parts[0].append(testBatch(1, 1000))
		parts[1].append(testBatch(1, 1000))
	}
	fetch := func(maxBytes, partMax int32) []int {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 12
		req.MaxBytes = maxBytes
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "limits"
		for p := range int32(2) {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.PartitionMaxBytes = p, partMax
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp := dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.FetchResponse)
		var out []int
		for _, p := range resp.Topics[0].Partitions {
			require.Zero(t, p.ErrorCode)
			require.Zero(t, len(p.RecordBatches)%size, "whole batches only")
			out = append(out, len(p.RecordBatches)/size)
		}
		return out
	}
	assert.Equal(t, []int{10, 10}, fetch(1<<20, 1<<20))
	assert.Equal(t, []int{3, 3}, fetch(1<<20, 3*size+10))
	assert.Equal(t, []int{5, 0}, fetch(5*size, 1<<20))
	assert.Equal(t, []int{4, 3}, fetch(7*size, 4*size))
	assert.Equal(t, []int{1, 0}, fetch(10, 10), "the first partition gets one batch whatever the limits")
}
