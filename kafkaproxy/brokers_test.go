package kafkaproxy_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// metadataThrough asks the proxy at addr for metadata with a fresh client
// and returns the brokers it advertises, by node id.
func metadataThrough(t *testing.T, addr string) map[int32]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	require.NoError(t, err)
	out := map[int32]string{}
	for _, b := range resp.Brokers {
		out[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	return out
}

// freePortBlock finds n consecutive free ports on host.
func freePortBlock(t *testing.T, host string, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", host+":0")
		require.NoError(t, err)
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if base+n > 65535 {
			continue
		}
		ok := true
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no block of free ports")
	return 0
}

// TestBrokerPortsAreDeterministic runs two proxy replicas with the same
// config (on two loopback addresses, as two hosts would) and checks they
// advertise the same address for every broker: base port + node id at the
// advertise host.
func TestBrokerPortsAreDeterministic(t *testing.T) {
	base := freePortBlock(t, "127.0.0.1", 4)
	// Both replicas bind the same ports on different loopback addresses.
	var advertised []map[int32]string
	first := startEnv(t)
	for _, host := range []string{"127.0.0.2", "127.0.0.3"} {
		p, err := kafkaproxy.New(kafkaproxy.Config{
			Listen:         net.JoinHostPort(host, strconv.Itoa(base)),
			BrokerPortBase: base + 1,
			AdvertiseHost:  "mesh.example",
			Upstreams:      first.cluster.ListenAddrs(),
			Logger:         testLogger(t),
		})
		require.NoError(t, err)
		require.NoError(t, p.Listen())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Serve(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)
		advertised = append(advertised, p.BrokerAddrs())
	}
	want := map[int32]string{}
	for id := range int32(3) {
		want[id] = net.JoinHostPort("mesh.example", strconv.Itoa(base+1+int(id)))
	}
	assert.Equal(t, want, advertised[0])
	assert.Equal(t, advertised[0], advertised[1], "two replicas with one config advertise the same brokers")
}

func TestAdvertiseHost(t *testing.T) {
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) { c.AdvertiseHost = "localhost" }))
	brokers := metadataThrough(t, e.addr)
	require.Len(t, brokers, 3)
	for id, addr := range brokers {
		host, _, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		assert.Equal(t, "localhost", host, "broker %d", id)
	}
}

// TestNewBrokerGetsListener adds a broker to the running cluster, moves a
// partition onto it, and checks that clients learn it through the proxy,
// at a proxy address, and can produce to it.
func TestNewBrokerGetsListener(t *testing.T) {
	e := startEnv(t, withTopic("grow", 1))
	before := metadataThrough(t, e.addr)
	require.Len(t, before, 3)

	id, port, err := e.cluster.AddNode(-1, 0)
	require.NoError(t, err)
	require.NoError(t, e.cluster.MoveTopicPartition("grow", 0, id))

	after := metadataThrough(t, e.addr)
	require.Len(t, after, 4)
	addr, ok := after[id]
	require.True(t, ok, "new node %d advertised", id)
	assert.NotContains(t, addr, ":"+strconv.Itoa(port), "the new broker's own port must not leak")
	assert.Equal(t, e.proxy.BrokerAddrs()[id], addr)

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr), kgo.DefaultProduceTopic("grow"), kgo.ConsumeTopics("grow"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		require.NoError(t, cl.ProduceSync(ctx, kgo.StringRecord(fmt.Sprint(i))).FirstErr())
	}
	got := 0
	for got < 20 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			assert.Equal(t, strconv.Itoa(got), string(r.Value))
			got++
		})
	}
	assert.Equal(t, int32(id), e.cluster.LeaderFor("grow", 0))
}
