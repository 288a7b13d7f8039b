package kafkaproxy_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestHalfClosedClientGetsWhatItIsOwed sends pipelined requests, closes its
// sending side, and still reads every response before the proxy closes.
func TestHalfClosedClientGetsWhatItIsOwed(t *testing.T) {
	e := startEnv(t, withTopic("half", 1))
	w := wireDial(t, e.addr)
	reqs := []kmsg.Request{wireApiVersions(3), wireMetadata(12, "half"), wireMetadata(9), wireApiVersions(0)}
	var frames [][]byte
	for i, r := range reqs {
		frames = append(frames, wireRequest(int32(200+i), &wireClientID, r))
	}
	w.write(frames...)
	require.NoError(t, w.nc.(*net.TCPConn).CloseWrite())
	for i, r := range reqs {
		wireDecode(t, w.read(), int32(200+i), r)
	}
	require.NoError(t, w.nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := w.br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the proxy closes once everything owed is out")
}
