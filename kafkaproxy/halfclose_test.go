package kafkaproxy_test

import (
	"encoding/binary"
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

// TestLocalAnswerToLargeRequest sends a too-new ApiVersions request whose
// body runs past the proxy's 64 KiB head, then a normal one: the proxy
// answers the first itself, drops its body, and the stream stays framed.
func TestLocalAnswerToLargeRequest(t *testing.T) {
	e := startEnv(t)
	w := wireDial(t, e.addr)
	big := []byte{0, 18, 0, 99, 0, 0, 1, 44, 0xff, 0xff} // ApiVersions v99, corr 300
	big = append(big, make([]byte, 200<<10)...)
	frame := append([]byte{0, 0, 0, 0}, big...)
	binary.BigEndian.PutUint32(frame, uint32(len(big)))
	next := wireRequest(301, &wireClientID, wireApiVersions(3))
	w.write(frame, next)
	require.Equal(t, wireUnsupportedV0(300), w.read())
	wireDecode(t, w.read(), 301, wireApiVersions(3))
}
