package protocol

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNextHeadStreamsTheRest(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 10_000) // 160 KB
	small := []byte("small frame")
	stream := concat(AppendFrame(nil, big), AppendFrame(nil, small), AppendFrame(nil, big))
	r := NewReader(bytes.NewReader(stream), 0, 4096)

	head, err := r.NextHead(1000)
	require.NoError(t, err)
	assert.Equal(t, big[:1000], head)
	assert.Equal(t, AppendFrame(nil, big)[:1004], r.Frame(), "Frame is the size prefix and the head")
	assert.Equal(t, len(big)-1000, r.Rest())
	assert.False(t, r.HasFrame(), "the rest of this frame is not a frame")
	_, err = r.Next()
	require.Error(t, err, "reading on before the rest is copied is refused")

	var out bytes.Buffer
	require.NoError(t, r.CopyRest(&out))
	assert.Equal(t, big[1000:], out.Bytes())
	assert.Zero(t, r.Rest())

	head, err = r.NextHead(1000)
	require.NoError(t, err)
	assert.Equal(t, small, head, "a frame under the head size is read whole")
	assert.Zero(t, r.Rest())

	body, err := r.Next()
	require.NoError(t, err, "Next reads a large frame whole")
	assert.Equal(t, big, body)
	_, err = r.NextHead(1000)
	assert.ErrorIs(t, err, io.EOF)
}

func TestCopyRestTruncated(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 5000)
	stream := AppendFrame(nil, big)[:3000]
	r := NewReader(bytes.NewReader(stream), 0, 512)
	_, err := r.NextHead(100)
	require.NoError(t, err)
	err = r.CopyRest(io.Discard)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// TestCopyRestOverTCP streams between real sockets, the path where the
// kernel splices.
func TestCopyRestOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	big := bytes.Repeat([]byte("kafka"), 400_000) // 2 MB
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(AppendFrame(AppendFrame(nil, big), []byte("next")))
	}()
	in, err := ln.Accept()
	require.NoError(t, err)
	defer in.Close()

	sink, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer sink.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	out, err := net.Dial("tcp", sink.Addr().String())
	require.NoError(t, err)

	r := NewReader(in, 0, 64<<10)
	head, err := r.NextHead(64 << 10)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(big[:64<<10], head), "head is the start of the body")
	_, err = out.Write(r.Frame())
	require.NoError(t, err)
	require.NoError(t, r.CopyRest(out))
	body, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, []byte("next"), body, "the stream stays framed after the rest was copied")
	out.Close()
	assert.True(t, bytes.Equal(AppendFrame(nil, big), <-got), "the frame arrives whole, byte for byte")
}

func TestReadRestAndPeekSize(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: a pooled buffer
	mid := bytes.Repeat([]byte("x"), 5000)
	stream := concat(AppendFrame(nil, mid), AppendFrame(nil, big), AppendFrame(nil, []byte("tail")))
	r := NewReader(bytes.NewReader(stream), 0, 4096)

	n, err := r.PeekSize()
	require.NoError(t, err)
	assert.Equal(t, int32(len(mid)), n)
	head, err := r.NextHead(1000)
	require.NoError(t, err)
	assert.Equal(t, mid[:1000], head)
	body, err := r.ReadRest()
	require.NoError(t, err)
	assert.Equal(t, mid, body)
	assert.Equal(t, AppendFrame(nil, mid), r.Frame(), "Frame is the whole frame after ReadRest")
	assert.Zero(t, r.Rest())

	n, err = r.PeekSize()
	require.NoError(t, err)
	assert.Equal(t, int32(len(big)), n, "peeking consumes nothing")
	_, err = r.NextHead(1000)
	require.NoError(t, err)
	_, err = r.PeekSize()
	assert.Error(t, err, "peeking inside a frame is refused")
	body, err = r.ReadRest()
	require.NoError(t, err)
	assert.Equal(t, big, body)
	again, err := r.ReadRest()
	require.NoError(t, err)
	assert.Equal(t, big, again, "ReadRest on a whole frame returns it")

	body, err = r.Next()
	require.NoError(t, err)
	assert.Equal(t, "tail", string(body))
}

func TestReadRestTruncated(t *testing.T) {
	stream := AppendFrame(nil, bytes.Repeat([]byte{1}, 5000))[:3000]
	r := NewReader(bytes.NewReader(stream), 0, 512)
	_, err := r.NextHead(100)
	require.NoError(t, err)
	_, err = r.ReadRest()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Zero(t, r.Rest())
}
