package h2relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var bidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// backend is the gRPC service behind the relay in these tests; its
// methods are picked by name under /t.S/.
type backend struct {
	relay    func() *Relay
	upstream string // where /t.S/Splice* calls go

	blockStarted chan struct{}
	blockErr     chan error
	slowRelease  chan struct{}
	holdFirst    chan []byte
	holdRelease  chan struct{}
}

func newBackend() *backend {
	return &backend{
		blockStarted: make(chan struct{}, 16),
		blockErr:     make(chan error, 16),
		slowRelease:  make(chan struct{}),
		holdFirst:    make(chan []byte, 1),
		holdRelease:  make(chan struct{}),
	}
}

func (b *backend) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	switch method {
	case "/t.S/Unary":
		var msg []byte
		if err := ss.RecvMsg(&msg); err != nil {
			return err
		}
		out := metadata.MD{}
		for k, v := range md {
			if strings.HasPrefix(k, "x-") || k == TokenHeader {
				out["echo-"+k] = v
			}
		}
		if err := ss.SendHeader(out); err != nil {
			return err
		}
		reply := append([]byte("re:"), msg...)
		if err := ss.SendMsg(&reply); err != nil {
			return err
		}
		ss.SetTrailer(metadata.Pairs("t-text", "done", "t-bin-bin", string([]byte{0, 0xff, '\n', 0x80})))
		return nil
	case "/t.S/Echo":
		for {
			var msg []byte
			if err := ss.RecvMsg(&msg); errors.Is(err, io.EOF) {
				ss.SetTrailer(metadata.Pairs("t-end", "echo"))
				return nil
			} else if err != nil {
				return err
			}
			if err := ss.SendMsg(&msg); err != nil {
				return err
			}
		}
	case "/t.S/Fail":
		var msg []byte
		if err := ss.RecvMsg(&msg); err != nil {
			return err
		}
		code, _ := strconv.Atoi(md.Get("x-code")[0])
		ss.SetTrailer(metadata.Pairs("t-fail-bin", string([]byte{1, 2, 3})))
		return status.Error(codes.Code(code), string(msg))
	case "/t.S/Block":
		b.blockStarted <- struct{}{}
		<-ctx.Done()
		b.blockErr <- ctx.Err()
		return ctx.Err()
	case "/t.S/Slow":
		var msg []byte
		if err := ss.RecvMsg(&msg); err != nil {
			return err
		}
		b.blockStarted <- struct{}{}
		<-b.slowRelease
		return ss.SendMsg(&msg)
	case "/t.S/Hold":
		st := b.relay().Stream(md.Get(TokenHeader)[0])
		if st == nil {
			return status.Error(codes.Internal, "no relay stream")
		}
		var first []byte
		if err := ss.RecvMsg(&first); err != nil {
			return err
		}
		b.holdFirst <- first
		<-b.holdRelease
		st.Release()
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
	case "/t.S/SpliceGet", "/t.S/SpliceEcho", "/t.S/SpliceFail", "/t.S/SpliceSink":
		streaming := method == "/t.S/SpliceEcho" || method == "/t.S/SpliceSink"
		return b.splice(ss, md, "/u.U/"+strings.TrimPrefix(method, "/t.S/Splice"), !streaming)
	}
	return status.Errorf(codes.Unimplemented, "no method %s", method)
}

// splice does what flightproxy's DoGet and DoPut handlers do: the first
// message goes upstream through the handler, the rest is spliced.
func (b *backend) splice(ss grpc.ServerStream, md metadata.MD, path string, endRequest bool) error {
	ctx := ss.Context()
	st := b.relay().Stream(md.Get(TokenHeader)[0])
	if st == nil {
		return status.Error(codes.Internal, "no relay stream")
	}
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: b.upstream},
		{Name: "content-type", Value: "application/grpc+raw"},
		{Name: "te", Value: "trailers"},
	}
	for _, v := range md.Get("x-size") {
		fields = append(fields, hpack.HeaderField{Name: "x-size", Value: v})
	}
	up, err := st.Splice(ctx, Target{Addr: b.upstream}, fields, nil)
	if err != nil {
		return status.Errorf(codes.Unavailable, "splice: %v", err)
	}
	defer up.Close()
	var first []byte
	if err := ss.RecvMsg(&first); err != nil {
		return err
	}
	if err := up.Send(first, endRequest); err != nil {
		return status.Errorf(codes.Unavailable, "send: %v", err)
	}
	if !endRequest {
		up.Pump(nil)
	}
	hdr, trailersOnly, err := up.Header(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "header: %v", err)
	}
	if trailersOnly {
		return status.Error(codes.Internal, "trailers only")
	}
	if err := ss.SendHeader(toMD(hdr)); err != nil {
		return err
	}
	trl, err := up.Trailers(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "trailers: %v", err)
	}
	ss.SetTrailer(toMD(trl))
	for _, f := range trl {
		if f.Name == "grpc-status" && f.Value != "0" {
			n, _ := strconv.Atoi(f.Value)
			return status.Error(codes.Code(n), "upstream failed")
		}
	}
	return nil
}

func toMD(fields []hpack.HeaderField) metadata.MD {
	md := metadata.MD{}
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") || strings.HasPrefix(f.Name, "grpc-") || f.Name == "content-type" {
			continue
		}
		v := f.Value
		if strings.HasSuffix(f.Name, "-bin") {
			b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
			if err != nil {
				continue
			}
			v = string(b)
		}
		md.Append(f.Name, v)
	}
	return md
}

// upstreamService serves /u.U/Get (x-size bytes in messages of the
// requested size, each byte a function of its offset) and /u.U/Echo.
type upstreamService struct {
	sent    atomic.Int64  // bytes Get handed to SendMsg and got back from
	getDone chan error    // how each Get ended
	sinkGo  chan struct{} // Sink reads on after its first message once closed
}

func pattern(off int64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := off + int64(i)
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	return b
}

func (u *upstreamService) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	switch method {
	case "/u.U/Get":
		var req []byte
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		total, _ := strconv.ParseInt(md.Get("x-size")[0], 10, 64)
		chunk, _ := strconv.Atoi(string(req))
		if err := ss.SendHeader(metadata.Pairs("u-hdr", "get", "u-hdr-bin", string([]byte{9, 0, 9}))); err != nil {
			return err
		}
		for off := int64(0); off < total; off += int64(chunk) {
			msg := pattern(off, int(min(int64(chunk), total-off)))
			if err := ss.SendMsg(&msg); err != nil {
				u.getDone <- err
				return err
			}
			u.sent.Add(int64(len(msg)))
		}
		u.getDone <- nil
		ss.SetTrailer(metadata.Pairs("u-trl", "get-done"))
		return nil
	case "/u.U/Fail":
		var req []byte
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		if err := ss.SendMsg(&req); err != nil {
			return err
		}
		ss.SetTrailer(metadata.Pairs("u-trl", "failed"))
		return status.Error(codes.PermissionDenied, "nope")
	case "/u.U/Sink":
		var off int64
		for first := true; ; first = false {
			var msg []byte
			if err := ss.RecvMsg(&msg); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			if !first && !bytes.Equal(msg, pattern(off, len(msg))) {
				return status.Errorf(codes.DataLoss, "data differs at %d", off)
			}
			if first {
				<-u.sinkGo
			} else {
				off += int64(len(msg))
			}
		}
		if err := ss.SendHeader(metadata.Pairs("u-hdr", "sink")); err != nil {
			return err
		}
		ss.SetTrailer(metadata.Pairs("u-got", strconv.FormatInt(off, 10)))
		return nil
	case "/u.U/Echo":
		if err := ss.SendHeader(metadata.Pairs("u-hdr", "echo")); err != nil {
			return err
		}
		for {
			var msg []byte
			if err := ss.RecvMsg(&msg); errors.Is(err, io.EOF) {
				ss.SetTrailer(metadata.Pairs("u-trl", "echo-done"))
				return nil
			} else if err != nil {
				return err
			}
			if err := ss.SendMsg(&msg); err != nil {
				return err
			}
		}
	}
	return status.Errorf(codes.Unimplemented, "no method %s", method)
}

type fixture struct {
	h  *harness
	b  *backend
	u  *upstreamService
	cc *grpc.ClientConn
}

func newFixture(t *testing.T, cfg Config, dial ...grpc.DialOption) *fixture {
	return newFixtureUp(t, cfg, nil, dial...)
}

func newFixtureUp(t *testing.T, cfg Config, upOpts []grpc.ServerOption, dial ...grpc.DialOption) *fixture {
	t.Helper()
	f := &fixture{b: newBackend(), u: &upstreamService{getDone: make(chan error, 64), sinkGo: make(chan struct{})}}
	f.b.upstream = newUpstream(t, f.u.handle, upOpts...)
	if cfg.Hold == nil {
		cfg.Hold = func(path string) bool {
			return path == "/t.S/Hold" || path == "/t.S/SpliceEcho" || path == "/t.S/SpliceSink"
		}
	}
	f.h = newHarness(t, cfg, f.b.handle)
	f.b.relay = func() *Relay { return f.h.relay }
	f.cc = f.h.client(t, dial...)
	return f
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnaryMetadataPassThrough(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	bin := string([]byte{0, 1, 2, 0xfe, 0xff, '\r', '\n'})
	ctx = metadata.AppendToOutgoingContext(ctx, "x-text", "hello", "x-data-bin", bin, TokenHeader, "forged")
	var hdr, trl metadata.MD
	in, out := []byte("ping\x00\xff"), []byte(nil)
	err := f.cc.Invoke(ctx, "/t.S/Unary", &in, &out, grpc.Header(&hdr), grpc.Trailer(&trl))
	require.NoError(t, err)
	assert.Equal(t, []byte("re:ping\x00\xff"), out)
	assert.Equal(t, []string{"hello"}, hdr.Get("echo-x-text"))
	assert.Equal(t, []string{bin}, hdr.Get("echo-x-data-bin"))
	// The relay drops the token a client sent and adds its own.
	tok := hdr.Get("echo-" + TokenHeader)
	require.Len(t, tok, 1)
	assert.NotEqual(t, "forged", tok[0])
	assert.Equal(t, []string{"done"}, trl.Get("t-text"))
	assert.Equal(t, []string{string([]byte{0, 0xff, '\n', 0x80})}, trl.Get("t-bin-bin"))
}

func TestBidiEcho(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Echo")
	require.NoError(t, err)
	for i := range 50 {
		msg := []byte(fmt.Sprintf("message %d", i))
		require.NoError(t, cs.SendMsg(&msg))
		var got []byte
		require.NoError(t, cs.RecvMsg(&got))
		assert.Equal(t, msg, got)
	}
	require.NoError(t, cs.CloseSend())
	var got []byte
	assert.ErrorIs(t, cs.RecvMsg(&got), io.EOF)
	assert.Equal(t, []string{"echo"}, cs.Trailer().Get("t-end"))
}

func TestManyConcurrentStreams(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	const streams, msgs = 100, 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Echo")
				if err != nil {
					return err
				}
				for i := range msgs {
					msg := bytes.Repeat([]byte{byte(s), byte(i)}, 1000*(i+1))
					if err := cs.SendMsg(&msg); err != nil {
						return err
					}
					var got []byte
					if err := cs.RecvMsg(&got); err != nil {
						return err
					}
					if !bytes.Equal(msg, got) {
						return fmt.Errorf("stream %d message %d differs", s, i)
					}
				}
				if err := cs.CloseSend(); err != nil {
					return err
				}
				var got []byte
				if err := cs.RecvMsg(&got); !errors.Is(err, io.EOF) {
					return fmt.Errorf("stream %d end: %v", s, err)
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
}

func TestLargeMessages(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Echo")
	require.NoError(t, err)
	for range 2 {
		msg := make([]byte, 8<<20)
		_, _ = rand.Read(msg)
		require.NoError(t, cs.SendMsg(&msg))
		var got []byte
		require.NoError(t, cs.RecvMsg(&got))
		require.True(t, bytes.Equal(msg, got), "8 MiB message differs after the round trip")
	}
	require.NoError(t, cs.CloseSend())
	var got []byte
	assert.ErrorIs(t, cs.RecvMsg(&got), io.EOF)
}

func TestClientCancelReachesBackend(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(testCtx(t))
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Block")
	require.NoError(t, err)
	<-f.b.blockStarted
	cancel()
	select {
	case err := <-f.b.blockErr:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(20 * time.Second):
		t.Fatal("the backend handler's context was not cancelled")
	}
	var got []byte
	assert.Equal(t, codes.Canceled, status.Code(cs.RecvMsg(&got)))
}

func TestBackendErrorStatus(t *testing.T) {
	f := newFixture(t, Config{})
	for _, tc := range []struct {
		code codes.Code
		msg  string
	}{
		{codes.InvalidArgument, "bad argument"},
		{codes.PermissionDenied, "denied by rule 'flight_dataset:x' 100% ✓"},
		{codes.NotFound, "no such dataset\nsecond line"},
		{codes.Unavailable, ""},
		{codes.Internal, strings.Repeat("long ", 2000)},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-code", strconv.Itoa(int(tc.code)))
			var trl metadata.MD
			in, out := []byte(tc.msg), []byte(nil)
			err := f.cc.Invoke(ctx, "/t.S/Fail", &in, &out, grpc.Trailer(&trl))
			st := status.Convert(err)
			assert.Equal(t, tc.code, st.Code())
			assert.Equal(t, tc.msg, st.Message())
			assert.Equal(t, []string{"\x01\x02\x03"}, trl.Get("t-fail-bin"))
		})
	}
}

func TestBackendGracefulStopLetsCallsFinish(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	const n = 5
	errs := make(chan error, n)
	for i := range n {
		go func() {
			in, out := []byte(fmt.Sprint("slow ", i)), []byte(nil)
			err := f.cc.Invoke(ctx, "/t.S/Slow", &in, &out)
			if err == nil && !bytes.Equal(in, out) {
				err = fmt.Errorf("got %q, want %q", out, in)
			}
			errs <- err
		}()
	}
	for range n {
		<-f.b.blockStarted
	}
	stopped := make(chan struct{})
	go func() {
		f.h.backend.GracefulStop()
		close(stopped)
	}()
	// GracefulStop sends GOAWAY, which the relay passes on; the calls in
	// flight still complete.
	time.Sleep(100 * time.Millisecond)
	close(f.b.slowRelease)
	for range n {
		assert.NoError(t, <-errs)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("GracefulStop did not return")
	}
}

func getStream(t *testing.T, f *fixture, ctx context.Context, total int64, chunk int) grpc.ClientStream {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-size", strconv.FormatInt(total, 10))
	cs, err := f.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/t.S/SpliceGet")
	require.NoError(t, err)
	req := []byte(strconv.Itoa(chunk))
	require.NoError(t, cs.SendMsg(&req))
	require.NoError(t, cs.CloseSend())
	return cs
}

// readGet reads a /u.U/Get response and checks every byte.
func readGet(cs grpc.ClientStream, total int64) error {
	var off int64
	for {
		var msg []byte
		err := cs.RecvMsg(&msg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("at %d: %w", off, err)
		}
		if !bytes.Equal(msg, pattern(off, len(msg))) {
			return fmt.Errorf("data differs in the message at %d", off)
		}
		off += int64(len(msg))
	}
	if off != total {
		return fmt.Errorf("got %d bytes, want %d", off, total)
	}
	return nil
}

func TestSpliceGet(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	const total = 24<<20 + 12345
	cs := getStream(t, f, ctx, total, 1<<20)
	hdr, err := cs.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"get"}, hdr.Get("u-hdr"))
	assert.Equal(t, []string{"\x09\x00\x09"}, hdr.Get("u-hdr-bin"))
	require.NoError(t, readGet(cs, total))
	assert.Equal(t, []string{"get-done"}, cs.Trailer().Get("u-trl"))
}

func TestSpliceEcho(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/SpliceEcho")
	require.NoError(t, err)
	var sent [][]byte
	recvErr := make(chan error, 1)
	var got [][]byte
	go func() {
		for {
			var msg []byte
			err := cs.RecvMsg(&msg)
			if errors.Is(err, io.EOF) {
				recvErr <- nil
				return
			}
			if err != nil {
				recvErr <- err
				return
			}
			got = append(got, msg)
		}
	}()
	for i := range 40 {
		msg := make([]byte, 1+i*50_000)
		_, _ = rand.Read(msg)
		sent = append(sent, msg)
		require.NoError(t, cs.SendMsg(&msg))
	}
	require.NoError(t, cs.CloseSend())
	require.NoError(t, <-recvErr)
	require.Len(t, got, len(sent))
	for i := range sent {
		require.True(t, bytes.Equal(sent[i], got[i]), "message %d differs", i)
	}
	hdr, err := cs.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"echo"}, hdr.Get("u-hdr"))
	assert.Equal(t, []string{"echo-done"}, cs.Trailer().Get("u-trl"))
}

// A client that reads nothing of a spliced stream holds the upstream back
// by flow control: what the upstream got out is bounded by the windows
// along the way, not by the stream's size.
func TestSpliceStalledClientBounded(t *testing.T) {
	const win = 256 << 10
	f := newFixture(t, Config{StreamWindow: win, ConnWindow: 2 * win},
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx := testCtx(t)
	const total, chunk = 64 << 20, 32 << 10
	cs := getStream(t, f, ctx, total, chunk)
	_, err := cs.Header()
	require.NoError(t, err)
	// Wait until the upstream stops making progress.
	last := int64(-1)
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		n := f.u.sent.Load()
		if n == last && n > 0 {
			break
		}
		last = n
	}
	// client window + relay's stream window toward the upstream + gRPC's
	// per-stream write quota on the upstream, with slack for one message
	// and the kernel buffer between relay and client (which only holds
	// what the client's window let through).
	const bound = 64<<10 + win + 64<<10 + 4*chunk + 256<<10
	sent := f.u.sent.Load()
	t.Logf("upstream sent %d bytes while the client read nothing (bound %d)", sent, bound)
	assert.LessOrEqual(t, sent, int64(bound))
	require.NoError(t, readGet(cs, total))
}

// Two spliced streams on one client connection: reading the second to the
// end before touching the first must not deadlock.
func TestSpliceTwoStreamsReadOutOfOrder(t *testing.T) {
	f := newFixture(t, Config{StreamWindow: 256 << 10, ConnWindow: 512 << 10},
		grpc.WithInitialWindowSize(128<<10), grpc.WithInitialConnWindowSize(256<<10))
	ctx := testCtx(t)
	const total = 16 << 20
	first := getStream(t, f, ctx, total, 64<<10)
	_, err := first.Header()
	require.NoError(t, err)
	second := getStream(t, f, ctx, total, 64<<10)
	require.NoError(t, readGet(second, total))
	require.NoError(t, readGet(first, total))
}

func TestHoldWaitsForRelease(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Hold")
	require.NoError(t, err)
	// A held stream keeps the protocol's default window (64 KiB) until
	// released, so the messages fit in it.
	msgs := [][]byte{[]byte("first"), bytes.Repeat([]byte("second"), 5_000), []byte("third")}
	for _, m := range msgs {
		require.NoError(t, cs.SendMsg(&m))
	}
	require.NoError(t, cs.CloseSend())
	assert.Equal(t, msgs[0], <-f.b.holdFirst)
	// Before Release, everything after the first message waits in the
	// relay (the client's END_STREAM included).
	st := f.h.relay.Stream(firstToken(t, f))
	require.NotNil(t, st)
	st.sess.client.mu.Lock()
	h := st.cs.hold
	var held int
	if h != nil {
		for _, it := range h.q {
			held += len(it.data)
		}
	}
	st.sess.client.mu.Unlock()
	require.NotNil(t, h, "the stream is not held")
	assert.Equal(t, 2*5+len(msgs[1])+len(msgs[2]), held, "held bytes")
	close(f.b.holdRelease)
	for _, want := range msgs[1:] {
		var got []byte
		require.NoError(t, cs.RecvMsg(&got))
		assert.Equal(t, want, got)
	}
	var got []byte
	assert.ErrorIs(t, cs.RecvMsg(&got), io.EOF)
}

// firstToken is the token of the only client stream of the first session.
func firstToken(t *testing.T, f *fixture) string {
	t.Helper()
	r := f.h.relay
	var tok string
	require.Eventually(t, func() bool {
		r.mu.Lock()
		s := r.sessions[1]
		r.mu.Unlock()
		if s == nil {
			return false
		}
		s.client.mu.Lock()
		defer s.client.mu.Unlock()
		for id, cs := range s.client.streams {
			if cs.hold != nil && cs.hold.end {
				tok = "1." + strconv.FormatUint(uint64(id), 10)
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	return tok
}

func TestSpliceUpstreamErrorStatus(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/t.S/SpliceFail")
	require.NoError(t, err)
	req := []byte("data before the error")
	require.NoError(t, cs.SendMsg(&req))
	require.NoError(t, cs.CloseSend())
	var got []byte
	require.NoError(t, cs.RecvMsg(&got))
	assert.Equal(t, req, got)
	assert.Equal(t, codes.PermissionDenied, status.Code(cs.RecvMsg(&got)))
	assert.Equal(t, []string{"failed"}, cs.Trailer().Get("u-trl"))
}

// A client that cancels a spliced call mid-stream ends the upstream's
// call too: its handler's context ends and nothing keeps sending.
func TestSpliceClientCancelReachesUpstream(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(testCtx(t))
	cs := getStream(t, f, ctx, 1<<30, 64<<10)
	var got []byte
	require.NoError(t, cs.RecvMsg(&got))
	assert.Equal(t, pattern(0, 64<<10), got)
	cancel()
	select {
	case err := <-f.u.getDone:
		// Reset (Canceled), or its connection closed after the reset
		// (Unavailable): the relay does not reuse a connection whose
		// stream it reset.
		assert.Contains(t, []codes.Code{codes.Canceled, codes.Unavailable}, status.Code(err), "upstream handler ended with %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream call went on after the client cancelled")
	}
}

// Spliced calls one after another reuse the session's upstream
// connection rather than dialling each time, and once the client goes
// the relay leaves nothing running.
func TestSpliceSequentialCallsNoLeak(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := testCtx(t)
	base0 := runtime.NumGoroutine() // the client is not connected yet
	// Warm up gRPC's own goroutines before the baseline.
	require.NoError(t, readGet(getStream(t, f, ctx, 1000, 100), 1000))
	<-f.u.getDone
	base := runtime.NumGoroutine()
	for i := range 20 {
		total := int64(1000 + i*10_000)
		require.NoError(t, readGet(getStream(t, f, ctx, total, 4096), total))
		require.NoError(t, <-f.u.getDone)
	}
	f.h.relay.mu.Lock()
	var ups int
	for _, s := range f.h.relay.sessions {
		s.mu.Lock()
		ups += len(s.ups)
		s.mu.Unlock()
	}
	f.h.relay.mu.Unlock()
	assert.Equal(t, 1, ups, "upstream connections for 20 sequential calls")
	waitGoroutines(t, base)
	require.NoError(t, f.cc.Close())
	select {
	case <-f.h.served:
	case <-time.After(20 * time.Second):
		t.Fatal("ServeConn did not return after the client closed")
	}
	waitGoroutines(t, base0)
}

// An upstream that reads nothing of a spliced upload holds the client
// back by flow control: what the client gets out is bounded by the
// windows along the way, not by the upload's size.
func TestSpliceStalledUpstreamBounded(t *testing.T) {
	const win = 64 << 10
	f := newFixtureUp(t, Config{StreamWindow: 256 << 10, ConnWindow: 1 << 20},
		[]grpc.ServerOption{grpc.InitialWindowSize(win), grpc.InitialConnWindowSize(win)})
	ctx := testCtx(t)
	cs, err := f.cc.NewStream(ctx, bidi, "/t.S/SpliceSink")
	require.NoError(t, err)
	first := []byte("descriptor")
	require.NoError(t, cs.SendMsg(&first))
	const total, chunk = 64 << 20, 32 << 10
	var sent atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		for off := int64(0); off < total; off += chunk {
			msg := pattern(off, chunk)
			if err := cs.SendMsg(&msg); err != nil {
				sendErr <- err
				return
			}
			sent.Add(chunk)
		}
		sendErr <- cs.CloseSend()
	}()
	last := int64(-1)
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		n := sent.Load()
		if n == last && n > 0 {
			break
		}
		last = n
	}
	// The upstream's windows + the window the relay mirrors to the client
	// (the same size) + gRPC's per-stream write quota on the client, with
	// slack for messages in flight.
	const bound = 2*win + win + 64<<10 + 4*chunk + 256<<10
	n := sent.Load()
	t.Logf("client got %d bytes out while the upstream read nothing (bound %d)", n, bound)
	assert.LessOrEqual(t, n, int64(bound))
	close(f.u.sinkGo)
	require.NoError(t, <-sendErr)
	var got []byte
	assert.ErrorIs(t, cs.RecvMsg(&got), io.EOF)
	assert.Equal(t, []string{strconv.Itoa(total)}, cs.Trailer().Get("u-got"))
}

// ServeConn's context ends the connection and every call on it.
func TestServeConnContextEndsCalls(t *testing.T) {
	f := newFixture(t, Config{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		nc, err := lis.Accept()
		if err != nil {
			served <- err
			return
		}
		served <- f.h.relay.ServeConn(ctx, nc)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	require.NoError(t, err)
	defer cc.Close()
	cs, err := cc.NewStream(testCtx(t), bidi, "/t.S/Block")
	require.NoError(t, err)
	<-f.b.blockStarted
	cancel()
	select {
	case <-served:
	case <-time.After(20 * time.Second):
		t.Fatal("ServeConn did not return when its context ended")
	}
	select {
	case err := <-f.b.blockErr:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(20 * time.Second):
		t.Fatal("the backend handler went on")
	}
	var got []byte
	assert.Equal(t, codes.Unavailable, status.Code(cs.RecvMsg(&got)))
	// The stream is gone from the relay's table.
	assert.Nil(t, f.h.relay.Stream("1.1"))
}

// TestRefusedHeldStreamsKeepTheConnectionWindow: a held stream whose
// handler fails without releasing it must not keep the held bytes out of
// the client's connection window, or a few refused uploads would stall
// the whole connection.
func TestRefusedHeldStreamsKeepTheConnectionWindow(t *testing.T) {
	f := newFixture(t, Config{ConnWindow: 256 << 10, Hold: func(path string) bool { return path == "/t.S/Fail" }})
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-code", "7")
	held := bytes.Repeat([]byte("x"), 60<<10) // fits the held stream's 64 KiB window
	for i := range 20 {                       // 20 x 60 KiB: far over the 256 KiB connection window
		cs, err := f.cc.NewStream(ctx, bidi, "/t.S/Fail")
		require.NoError(t, err)
		first := []byte("first")
		require.NoError(t, cs.SendMsg(&first))
		_ = cs.SendMsg(&held)
		var got []byte
		err = cs.RecvMsg(&got)
		require.Equal(t, codes.PermissionDenied, status.Code(err), "call %d: %v", i, err)
	}
}
