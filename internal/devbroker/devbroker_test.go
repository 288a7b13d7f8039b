package devbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestParseTopic(t *testing.T) {
	tp, err := ParseTopic("orders:12")
	require.NoError(t, err)
	assert.Equal(t, Topic{Name: "orders", Partitions: 12}, tp)
	for _, bad := range []string{"orders", ":3", "orders:0", "orders:x", "orders:100000"} {
		_, err := ParseTopic(bad)
		assert.Error(t, err, bad)
	}
}

// TestUnknownAPIKeyClosesConnection sends a request with an API key no
// Kafka version has. The broker closes that connection, as Kafka does,
// instead of crashing the process, and keeps serving everyone else.
func TestUnknownAPIKeyClosesConnection(t *testing.T) {
	c, err := Start(Config{Brokers: 1, Topics: []Topic{{Name: "t", Partitions: 1}}})
	require.NoError(t, err)
	defer c.Close()
	addr := c.ListenAddrs()[0]

	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	req := []byte{0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff} // key 999, v0, corr 1, null client id
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	_, err = nc.Write(append(frame, req...))
	require.NoError(t, err)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = nc.Read(make([]byte, 1))
	require.Error(t, err, "the connection is closed")
	var ne net.Error
	if errors.As(err, &ne) {
		assert.False(t, ne.Timeout(), "closed, not left hanging")
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("t"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, kgo.StringRecord("still here")).FirstErr())
}
