package kafkaproxy

// Authorization of large Produce requests against the streaming and memory
// rules of the data path: a request whose topics are all allowed streams
// through cut-through like any other, and one that must be read whole to be
// decoded takes its memory from the budget first.

import (
	"bufio"
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/policy"
)

// streamPolicy lets anonymous clients write "orders" and nothing else.
const streamPolicy = `
acls:
  - {principal: "User:*", operation: WRITE, resource: topic, name: orders, permission: allow}
`

// countingTap forwards TCP connections to a broker and counts the bytes it
// carries from the proxy to the broker.
type countingTap struct {
	ln   net.Listener
	sent atomic.Int64
}

func startTap(t *testing.T, broker string) *countingTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tap := &countingTap{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", broker)
			if err != nil {
				in.Close()
				continue
			}
			go func() {
				defer out.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := in.Read(buf)
					if n > 0 {
						tap.sent.Add(int64(n))
						if _, werr := out.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { defer in.Close(); _, _ = io.Copy(in, out) }()
		}
	}()
	return tap
}

// startStreamProxy starts a one-broker kfake cluster with topics orders and
// secret, and a proxy under streamPolicy whose bootstrap connections go
// through a counting tap.
func startStreamProxy(t *testing.T) (*Proxy, *countingTap) {
	p, tap, _ := startStreamCluster(t)
	return p, tap
}

// startStreamCluster is startStreamProxy that also returns the cluster.
func startStreamCluster(t *testing.T) (*Proxy, *countingTap, *kfake.Cluster) {
	t.Helper()
	c, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "orders", Partitions: 1}, {Name: "secret", Partitions: 1}}})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tap := startTap(t, c.ListenAddrs()[0])
	path := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(path, []byte(streamPolicy), 0o600))
	store, err := policy.NewStore(policy.StoreConfig{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	p, err := New(Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: []string{tap.ln.Addr().String()},
		Registerer: prometheus.NewRegistry(), Policy: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)
	return p, tap, c
}

// bigBatch is a magic v2 record batch holding one record of n bytes.
func bigBatch(n int) []byte {
	var rec []byte
	rec = kbin.AppendInt8(rec, 0)
	rec = kbin.AppendVarlong(rec, 0)
	rec = kbin.AppendVarint(rec, 0)
	rec = kbin.AppendVarintBytes(rec, []byte("k"))
	rec = kbin.AppendVarintBytes(rec, []byte(strings.Repeat("v", n)))
	rec = kbin.AppendVarint(rec, 0)
	records := append(kbin.AppendVarint(nil, int32(len(rec))), rec...)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: 1, Records: records,
		Length: int32(49 + len(records)),
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// produceFrame is a Produce v7 request frame (acks=1), size prefix
// included, with one partition of batch for each topic.
func produceFrame(corr int32, batch []byte, topics ...string) []byte {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(7)
	r.Acks, r.TimeoutMillis = 1, 10000
	for _, topic := range topics {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		r.Topics = append(r.Topics, rt)
	}
	id := "stream-test"
	b := make([]byte, 4, 1<<20)
	b = kbin.AppendInt16(b, r.Key())
	b = kbin.AppendInt16(b, r.Version)
	b = kbin.AppendInt32(b, corr)
	b = kbin.AppendNullableString(b, &id)
	b = r.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// readProduceResponse reads one Produce v7 response and returns its
// per-topic error codes.
func readProduceResponse(t *testing.T, br *bufio.Reader, nc net.Conn, corr int32) map[string]int16 {
	t.Helper()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(20*time.Second)))
	var sz [4]byte
	_, err := io.ReadFull(br, sz[:])
	require.NoError(t, err)
	frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err = io.ReadFull(br, frame)
	require.NoError(t, err)
	require.Equal(t, corr, int32(binary.BigEndian.Uint32(frame)))
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(7)
	require.NoError(t, resp.ReadFrom(frame[4:]))
	codes := map[string]int16{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			codes[rt.Topic] = rp.ErrorCode
		}
	}
	return codes
}

// TestAuthzAllowedProduceStreamsThrough: under a policy, a large Produce to
// an allowed topic reaches the broker while the client is still sending it,
// as it does without a policy, instead of being held whole in the proxy.
func TestAuthzAllowedProduceStreamsThrough(t *testing.T) {
	p, tap := startStreamProxy(t)
	frame := produceFrame(1, bigBatch(900<<10), "orders") // under kfake's 1 MiB message limit
	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	before := tap.sent.Load()
	head := 512 << 10
	_, err = nc.Write(frame[:head])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tap.sent.Load()-before >= int64(head/2) }, 10*time.Second, 5*time.Millisecond,
		"the broker got %d bytes of the first %d the client sent", tap.sent.Load()-before, head)
	_, err = nc.Write(frame[head:])
	require.NoError(t, err)
	assert.Equal(t, map[string]int16{"orders": 0}, readProduceResponse(t, bufio.NewReader(nc), nc, 1))
}

// TestAuthzDecodedProduceWaitsForBudget: a large Produce that must be read
// whole to take a denied topic out waits for memory from the budget, like
// every other frame read whole, and is answered once memory is given back.
func TestAuthzDecodedProduceWaitsForBudget(t *testing.T) {
	p, _ := startStreamProxy(t)
	pool := &p.sh.budget.requests
	require.True(t, pool.acquire(pool.total, nil), "fill the request half of the budget")
	released := false
	defer func() {
		if !released {
			pool.release(pool.total)
		}
	}()
	waits := testutil.ToFloat64(p.sh.m.budgetWaits)

	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write(produceFrame(1, bigBatch(256<<10), "orders", "secret"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return testutil.ToFloat64(p.sh.m.budgetWaits) > waits }, 10*time.Second, 5*time.Millisecond,
		"the request was read whole without waiting for memory")
	pool.release(pool.total)
	released = true
	assert.Equal(t, map[string]int16{"orders": 0, "secret": errTopicAuth}, readProduceResponse(t, bufio.NewReader(nc), nc, 1))
	assert.Eventually(t, func() bool { return pool.inUse() == 0 }, 5*time.Second, 5*time.Millisecond, "memory held for the request is given back")
}

// TestAuthzAuditClientIDNoRace: the audit entries of a response fix-up (a
// Metadata answer with hidden topics, filtered on the response goroutine)
// read the client id the request was sent under, not the connection's
// field the request goroutine fills in when a later request is the first
// to name one. Run with -race.
func TestAuthzAuditClientIDNoRace(t *testing.T) {
	p, _ := startStreamProxy(t)
	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	metadata := func(corr int32, clientID *string) []byte {
		r := kmsg.NewPtrMetadataRequest()
		r.SetVersion(4) // all topics: nil
		b := make([]byte, 4, 64)
		b = kbin.AppendInt16(b, r.Key())
		b = kbin.AppendInt16(b, r.Version)
		b = kbin.AppendInt32(b, corr)
		b = kbin.AppendNullableString(b, clientID)
		b = r.AppendTo(b)
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return b
	}
	late := "late-client-id"
	const n = 200
	var frames []byte
	for i := range int32(n) {
		frames = append(frames, metadata(i+1, nil)...)
	}
	_, err = nc.Write(frames)
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(30*time.Second)))
	for i := range n + 1 {
		var sz [4]byte
		_, err := io.ReadFull(br, sz[:])
		require.NoError(t, err, "response %d", i)
		frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
		_, err = io.ReadFull(br, frame)
		require.NoError(t, err)
		if i == 0 {
			// The first request to name a client id comes while the
			// proxy is still answering the others.
			_, err = nc.Write(metadata(n+1, &late))
			require.NoError(t, err)
		}
		resp := kmsg.NewPtrMetadataResponse()
		resp.SetVersion(4)
		require.NoError(t, resp.ReadFrom(frame[4:]))
		for _, topic := range resp.Topics {
			assert.NotEqual(t, "secret", *topic.Topic, "a topic the principal may not describe is hidden")
		}
	}
}

// TestAuthzUnknownTopicIDsRefreshOnce: a Produce v13 naming topics by ids
// the proxy does not know costs at most one metadata refresh, however many
// ids it names, and each gets UNKNOWN_TOPIC_ID. A client cannot make the
// proxy send the cluster a Metadata request per id.
func TestAuthzUnknownTopicIDsRefreshOnce(t *testing.T) {
	p, _, cluster := startStreamCluster(t)
	var metadata atomic.Int64
	cluster.ControlKey(kmsg.Metadata.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		metadata.Add(1)
		return nil, nil, false
	})
	const ids = 30
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(13)
	r.Acks, r.TimeoutMillis = 1, 5000
	for i := range ids {
		rt := kmsg.NewProduceRequestTopic()
		rt.TopicID = [16]byte{0xee, byte(i + 1)}
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = bigBatch(10)
		rt.Partitions = append(rt.Partitions, rp)
		r.Topics = append(r.Topics, rt)
	}
	id := "unknown-ids"
	b := make([]byte, 4, 4096)
	b = kbin.AppendInt16(b, r.Key())
	b = kbin.AppendInt16(b, r.Version)
	b = kbin.AppendInt32(b, 7)
	b = kbin.AppendNullableString(b, &id)
	b = kbin.AppendUvarint(b, 0) // no header tags
	b = r.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))

	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	before := metadata.Load()
	_, err = nc.Write(b)
	require.NoError(t, err)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(60*time.Second)))
	br := bufio.NewReader(nc)
	var sz [4]byte
	_, err = io.ReadFull(br, sz[:])
	require.NoError(t, err)
	frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err = io.ReadFull(br, frame)
	require.NoError(t, err)
	require.EqualValues(t, 7, binary.BigEndian.Uint32(frame))
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(13)
	require.NoError(t, resp.ReadFrom(frame[5:]))
	require.Len(t, resp.Topics, ids)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			assert.Equal(t, errUnknownID, rp.ErrorCode)
		}
	}
	// One refresh for the request, and maybe one periodic refresh.
	assert.LessOrEqual(t, metadata.Load()-before, int64(2), "Metadata requests sent to the cluster")
}
