package h2relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient speaks HTTP/2 to the relay frame by frame, to send what no
// real client would.
type rawClient struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialRaw(t *testing.T, addr string, preface bool) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	c := &rawClient{t: t, nc: nc}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.AllowIllegalWrites = true
	c.fr.AllowIllegalReads = true
	c.fr.SetMaxReadFrameSize(1 << 24)
	c.enc = hpack.NewEncoder(&c.hb)
	if preface {
		c.write([]byte(http2.ClientPreface))
		require.NoError(t, c.fr.WriteSettings())
	}
	return c
}

// write ignores errors: the relay may close the connection while the
// bad input is still being written.
func (c *rawClient) write(b []byte) { _, _ = c.nc.Write(b) }

// block is the header block of a gRPC request for path.
func (c *rawClient) block(path string) []byte {
	c.hb.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "relay.test"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		_ = c.enc.WriteField(f)
	}
	return bytes.Clone(c.hb.Bytes())
}

func (c *rawClient) open(id uint32, path string) {
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(path), EndHeaders: true})
}

// emptyMessage is a gRPC message of zero bytes: its 5-byte prefix.
var emptyMessage = []byte{0, 0, 0, 0, 0}

// await reads frames until one of type typ, or the connection's end.
func (c *rawClient) await(typ http2.FrameType) (http2.Frame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if f.Header().Type == typ {
			return f, nil
		}
	}
}

// expectClosed reads until the connection ends, which must be a clean
// close (FIN), not a reset or a timeout.
func (c *rawClient) expectClosed() {
	_ = c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, c.nc)
	assert.NoError(c.t, err, "the relay should close the connection cleanly")
	_ = c.nc.Close()
}

type wireCase struct {
	name string
	cfg  Config
	send func(c *rawClient)
	// want GOAWAY with code, or RST_STREAM on rstID with code.
	rstID uint32
	code  http2.ErrCode
}

func wireCases() []wireCase {
	held := Config{StreamWindow: 65535, ConnWindow: 1 << 20, Hold: func(string) bool { return true }}
	return []wireCase{
		{name: "bad preface", send: func(c *rawClient) {
			c.write([]byte("GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n"))
		}, code: http2.ErrCodeProtocol},
		{name: "TLS to a plaintext port", send: func(c *rawClient) {
			c.write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		}, code: http2.ErrCodeProtocol},
		{name: "frame over 16384 bytes", send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, 16385))
		}, code: http2.ErrCodeFrameSize},
		{name: "DATA on stream 0", send: func(c *rawClient) {
			_ = c.fr.WriteData(0, false, []byte("x"))
		}, code: http2.ErrCodeProtocol},
		{name: "DATA on an idle stream", send: func(c *rawClient) {
			_ = c.fr.WriteData(5, false, emptyMessage)
		}, code: http2.ErrCodeProtocol},
		{name: "RST_STREAM on an idle stream", send: func(c *rawClient) {
			_ = c.fr.WriteRSTStream(7, http2.ErrCodeCancel)
		}, code: http2.ErrCodeProtocol},
		{name: "WINDOW_UPDATE on an idle stream", send: func(c *rawClient) {
			_ = c.fr.WriteWindowUpdate(9, 1024)
		}, code: http2.ErrCodeProtocol},
		{name: "HEADERS on stream 0", send: func(c *rawClient) {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 0, BlockFragment: c.block("/t.S/Block"), EndHeaders: true})
		}, code: http2.ErrCodeProtocol},
		{name: "HEADERS on an even stream", send: func(c *rawClient) {
			c.open(2, "/t.S/Block")
		}, code: http2.ErrCodeProtocol},
		{name: "HEADERS with garbage HPACK", send: func(c *rawClient) {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xfe, 0xff, 0xff, 0xff, 0x0f}, EndHeaders: true})
		}, code: http2.ErrCodeCompression},
		{name: "header block over 1 MiB", send: func(c *rawClient) {
			chunk := bytes.Repeat([]byte{0x82}, 16384)
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: chunk})
			for range 64 {
				_ = c.fr.WriteContinuation(1, false, chunk)
			}
		}, code: http2.ErrCodeProtocol},
		{name: "header list over 1 MiB decoded from a small block", send: func(c *rawClient) {
			// 0x82 is ":method: GET", 42 bytes of header list for one
			// byte of block: 64 KiB decode to 2.7 MiB.
			block := append(c.block("/t.S/Block"), bytes.Repeat([]byte{0x82}, 64<<10)...)
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16384]})
			for block = block[16384:]; len(block) > 16384; block = block[16384:] {
				_ = c.fr.WriteContinuation(1, false, block[:16384])
			}
			_ = c.fr.WriteContinuation(1, true, block)
		}, code: http2.ErrCodeProtocol},
		{name: "CONTINUATION without HEADERS", send: func(c *rawClient) {
			_ = c.fr.WriteContinuation(1, true, c.block("/t.S/Block"))
		}, code: http2.ErrCodeProtocol},
		{name: "other frame inside a header block", send: func(c *rawClient) {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block("/t.S/Block")})
			_ = c.fr.WritePing(false, [8]byte{})
		}, code: http2.ErrCodeProtocol},
		{name: "WINDOW_UPDATE overflowing the connection window", send: func(c *rawClient) {
			_ = c.fr.WriteWindowUpdate(0, 1<<31-1)
		}, code: http2.ErrCodeFlowControl},
		{name: "WINDOW_UPDATE overflowing a stream window", send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WriteWindowUpdate(1, 1<<31-1)
		}, rstID: 1, code: http2.ErrCodeFlowControl},
		{name: "WINDOW_UPDATE of 0 on the connection", send: func(c *rawClient) {
			_ = c.fr.WriteWindowUpdate(0, 0)
		}, code: http2.ErrCodeProtocol},
		{name: "WINDOW_UPDATE of 0 on a stream", send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WriteWindowUpdate(1, 0)
		}, rstID: 1, code: http2.ErrCodeProtocol},
		{name: "DATA beyond the stream window", cfg: held, send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WriteData(1, false, emptyMessage)
			for range 4 {
				_ = c.fr.WriteData(1, false, make([]byte, 16384))
			}
		}, rstID: 1, code: http2.ErrCodeFlowControl},
		{name: "DATA beyond the connection window", cfg: Config{StreamWindow: 65535, ConnWindow: 65535, Hold: held.Hold}, send: func(c *rawClient) {
			for _, id := range []uint32{1, 3} {
				c.open(id, "/t.S/Block")
				_ = c.fr.WriteData(id, false, emptyMessage)
				for range 3 {
					_ = c.fr.WriteData(id, false, make([]byte, 16000))
				}
			}
		}, code: http2.ErrCodeFlowControl},
		{name: "PUSH_PROMISE from a client", send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: c.block("/x"), EndHeaders: true})
		}, code: http2.ErrCodeProtocol},
		{name: "SETTINGS with MAX_FRAME_SIZE under 16384", send: func(c *rawClient) {
			_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
		}, code: http2.ErrCodeProtocol},
		{name: "SETTINGS with MAX_FRAME_SIZE over 2^24-1", send: func(c *rawClient) {
			_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
		}, code: http2.ErrCodeProtocol},
		{name: "SETTINGS with INITIAL_WINDOW_SIZE over 2^31-1", send: func(c *rawClient) {
			_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, code: http2.ErrCodeFlowControl},
		{name: "SETTINGS of a bad length", send: func(c *rawClient) {
			_ = c.fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0})
		}, code: http2.ErrCodeFrameSize},
		{name: "PING of a bad length", send: func(c *rawClient) {
			_ = c.fr.WriteRawFrame(http2.FramePing, 0, 0, []byte{1, 2, 3})
		}, code: http2.ErrCodeFrameSize},
		{name: "RST_STREAM of a bad length", send: func(c *rawClient) {
			c.open(1, "/t.S/Block")
			_ = c.fr.WriteRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 8})
		}, code: http2.ErrCodeFrameSize},
	}
}

func TestWireBadInput(t *testing.T) {
	for _, tc := range wireCases() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			base := runtime.NumGoroutine()
			c := dialRaw(t, f.h.addr, tc.name != "bad preface" && tc.name != "TLS to a plaintext port")
			tc.send(c)
			if tc.rstID == 0 {
				fr, err := c.await(http2.FrameGoAway)
				require.NoError(t, err, "want GOAWAY")
				ga := fr.(*http2.GoAwayFrame)
				assert.Equal(t, tc.code, ga.ErrCode, "GOAWAY code (debug data %q)", ga.DebugData())
				c.expectClosed()
				select {
				case err := <-f.h.served:
					var ce *connError
					assert.True(t, errors.As(err, &ce), "ServeConn: %v", err)
				case <-time.After(15 * time.Second):
					t.Fatal("ServeConn did not return")
				}
			} else {
				fr, err := c.await(http2.FrameRSTStream)
				require.NoError(t, err, "want RST_STREAM")
				rst := fr.(*http2.RSTStreamFrame)
				assert.Equal(t, tc.rstID, rst.StreamID)
				assert.Equal(t, tc.code, rst.ErrCode)
				// A stream error leaves the connection serving.
				require.NoError(t, c.fr.WritePing(false, [8]byte{7}))
				fr, err = c.await(http2.FramePing)
				require.NoError(t, err, "the connection should still serve")
				assert.True(t, fr.(*http2.PingFrame).IsAck())
				_ = c.nc.Close()
				select {
				case <-f.h.served:
				case <-time.After(15 * time.Second):
					t.Fatal("ServeConn did not return")
				}
			}
			waitGoroutines(t, base)
		})
	}
}

// DATA that arrives for a stream the relay already forgot (reset, ended)
// is dropped, but its connection window must come back: a client's upload
// in flight when a handler refused the call would otherwise eat the
// window every other stream needs.
func TestWireDataOnClosedStreamCredited(t *testing.T) {
	for _, padded := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "padded"}[padded], func(t *testing.T) {
			f := newFixture(t, Config{StreamWindow: 65535, ConnWindow: 65535})
			c := dialRaw(t, f.h.addr, true)
			c.open(1, "/t.S/Block")
			<-f.b.blockStarted
			require.NoError(t, c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
			for range 2 {
				if padded {
					require.NoError(t, c.fr.WriteDataPadded(1, false, make([]byte, 16000), make([]byte, 200)))
				} else {
					require.NoError(t, c.fr.WriteData(1, false, make([]byte, 16384)))
				}
			}
			for {
				fr, err := c.await(http2.FrameWindowUpdate)
				require.NoError(t, err, "want the connection window back")
				if fr.Header().StreamID == 0 {
					break
				}
			}
		})
	}
}

// Padding is flow-controlled but never delivered: it is credited at once,
// also on a held stream whose data waits.
func TestWirePaddingOnHeldStreamCredited(t *testing.T) {
	f := newFixture(t, Config{StreamWindow: 65535, ConnWindow: 65535, Hold: func(string) bool { return true }})
	c := dialRaw(t, f.h.addr, true)
	c.open(1, "/t.S/Block")
	require.NoError(t, c.fr.WriteData(1, false, emptyMessage))
	<-f.b.blockStarted
	for range 70 { // 70 * 255 bytes of padding: over a quarter of the window
		require.NoError(t, c.fr.WriteDataPadded(1, false, []byte{1}, make([]byte, 255)))
	}
	for {
		fr, err := c.await(http2.FrameWindowUpdate)
		require.NoError(t, err, "want the connection window back")
		if fr.Header().StreamID == 0 {
			break
		}
	}
}

// The relay advertises SETTINGS_MAX_CONCURRENT_STREAMS and refuses a
// stream past it, so one connection cannot pile up streams (each costs
// the relay and the backend state) without end.
func TestWireMaxConcurrentStreams(t *testing.T) {
	const limit = 10
	f := newFixture(t, Config{MaxConcurrentStreams: limit})
	c := dialRaw(t, f.h.addr, true)
	fr, err := c.await(http2.FrameSettings)
	require.NoError(t, err)
	v, ok := fr.(*http2.SettingsFrame).Value(http2.SettingMaxConcurrentStreams)
	assert.True(t, ok, "SETTINGS_MAX_CONCURRENT_STREAMS advertised")
	assert.Equal(t, uint32(limit), v)
	for i := range limit + 1 {
		c.open(uint32(2*i+1), "/t.S/Block")
	}
	fr, err = c.await(http2.FrameRSTStream)
	require.NoError(t, err, "want RST_STREAM")
	rst := fr.(*http2.RSTStreamFrame)
	assert.Equal(t, uint32(2*limit+1), rst.StreamID)
	assert.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
	for range limit {
		<-f.b.blockStarted
	}
	// Ending one makes room for the next.
	require.NoError(t, c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	<-f.b.blockErr
	c.open(2*limit+3, "/t.S/Block")
	<-f.b.blockStarted
}
