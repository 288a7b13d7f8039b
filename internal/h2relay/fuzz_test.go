package h2relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
)

// echoHandler echoes messages until the client half-closes or the stream
// ends; it never outlives its stream.
func echoHandler(_ any, ss grpc.ServerStream) error {
	for {
		var msg []byte
		if err := ss.RecvMsg(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := ss.SendMsg(&msg); err != nil {
			return err
		}
	}
}

// fuzzSeeds are frame sequences a client sends after its preface: a good
// call, and some of the bad input wire_test.go tests one by one.
func fuzzSeeds() [][]byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/t.S/Echo"}, {Name: ":authority", Value: "relay.test"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "x-bin", Value: "AAEC"},
	} {
		_ = enc.WriteField(f)
	}
	block := hb.Bytes()
	build := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		write(fr)
		return b.Bytes()
	}
	return [][]byte{
		build(func(fr *http2.Framer) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
			_ = fr.WriteData(1, false, []byte{0, 0, 0, 0, 3, 'a', 'b', 'c'})
			_ = fr.WriteWindowUpdate(0, 1<<20)
			_ = fr.WriteData(1, true, []byte{0, 0, 0, 0, 1, 'd'})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true})
			_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		}),
		build(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:5]})
			_ = fr.WriteContinuation(1, true, block[5:])
			_ = fr.WriteDataPadded(1, false, []byte{0, 0, 0, 0, 1, 'x'}, make([]byte, 9))
			_ = fr.WritePing(false, [8]byte{1})
			_ = fr.WriteWindowUpdate(1, 0)
		}),
		build(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, Priority: http2.PriorityParam{StreamDep: 1, Weight: 9}})
			_ = fr.WriteData(1, false, make([]byte, 70000%16384))
			_ = fr.WriteRawFrame(http2.FrameData, http2.FlagDataPadded, 1, []byte{200, 1})
		}),
		build(func(fr *http2.Framer) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x3f, 0xe1, 0x1f}, EndHeaders: true})
		}),
	}
}

// FuzzRelayFrames feeds arbitrary bytes after a valid client preface to a
// relay with a real gRPC backend: the relay must not panic, and must
// either end the connection or keep serving it (answer a PING), and leave
// no goroutine behind once the client is gone.
func FuzzRelayFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	h := newHarness(f, Config{StreamWindow: 65535, ConnWindow: 1 << 20}, echoHandler)
	ping := [8]byte{'f', 'u', 'z', 'z', 'p', 'i', 'n', 'g'}
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		nc, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			var b bytes.Buffer
			b.WriteString(http2.ClientPreface)
			b.Write(in)
			fr := http2.NewFramer(&b, nil)
			_ = fr.WritePing(false, ping)
			_, _ = nc.Write(b.Bytes())
			// The relay sees the input end, and the test need not wait
			// for a deadline when the input ended inside a frame.
			_ = nc.(*net.TCPConn).CloseWrite()
		}()
		fr := http2.NewFramer(io.Discard, nc)
		fr.AllowIllegalReads = true
		fr.SetMaxReadFrameSize(1 << 24)
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			fm, err := fr.ReadFrame()
			if err != nil {
				// The relay ended the connection (after the input ended,
				// perhaps inside a frame that swallowed the PING).
				break
			}
			if p, ok := fm.(*http2.PingFrame); ok && p.IsAck() && p.Data == ping {
				break // still serving
			}
			if _, ok := fm.(*http2.GoAwayFrame); ok {
				break
			}
		}
		_ = nc.Close()
		<-wrote
		select {
		case <-h.served:
		case <-time.After(20 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
		waitGoroutines(t, base)
	})
}
