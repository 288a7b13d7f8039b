package kafkaproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// topicCounts sums batch stats and error codes per topic (name, or id as hex).
type topicCounts map[string]protocol.BatchStats

func topicKey(name []byte, id [16]byte) string {
	if name == nil {
		return fmt.Sprintf("%x", id)
	}
	return string(name)
}

func (tc topicCounts) add(name []byte, id [16]byte, s protocol.BatchStats) {
	k := topicKey(name, id)
	c := tc[k]
	c.Batches += s.Batches
	c.Records += s.Records
	c.Bytes += s.Bytes
	c.Control += s.Control
	tc[k] = c
}

// memCounts walks body whole, as for a frame that was not streamed.
func memCounts(key, version int16, body []byte) (topicCounts, error) {
	tc := topicCounts{}
	var bad error
	fn := func(pd protocol.PartitionData) {
		s, err := protocol.CountBatches(pd.Records)
		if err != nil && bad == nil {
			bad = err
		}
		s.Partial = 0
		tc.add(pd.Topic, pd.TopicID, s)
	}
	var err error
	if key == protocol.ProduceKey {
		err = protocol.WalkProduceRequest(version, body, fn)
	} else {
		_, err = protocol.WalkFetchResponse(version, body, fn)
	}
	if err == nil {
		err = bad
	}
	return tc, err
}

// streamCounts walks body as the proxy does a streamed frame: head in
// memory, pend bytes through Write (what the reader had buffered), the rest
// through ReadFrom from src. It returns the counts and what was forwarded.
func streamCounts(key, version int16, body []byte, head, pend int, src func([]byte) io.Reader, dst io.Writer) (topicCounts, error) {
	head, pend = min(head, len(body)), min(pend, len(body)-min(head, len(body)))
	tc := topicCounts{}
	var w streamWalk
	w.emit = func(name []byte, id [16]byte, _ int16, s protocol.BatchStats) { tc.add(name, id, s) }
	w.start(key, version, body[:head])
	w.dst = dst
	if pend > 0 {
		if _, err := w.Write(body[head : head+pend]); err != nil {
			return nil, err
		}
	}
	if rest := body[head+pend:]; len(rest) > 0 {
		n, err := w.ReadFrom(&io.LimitedReader{R: src(rest), N: int64(len(rest))})
		if err != nil {
			return nil, err
		}
		if n != int64(len(rest)) {
			return nil, fmt.Errorf("ReadFrom read %d of %d", n, len(rest))
		}
	}
	w.walked()
	defer w.release()
	return tc, w.err
}

func fromBytes(b []byte) io.Reader { return bytes.NewReader(b) }

func produceRequests(t testing.TB) map[string][]byte {
	small, large := recordBatch(10, 100), recordBatch(200, 1000) // ~1.2 KB and ~200 KB
	out := map[string][]byte{}
	for v := int16(3); v <= 13; v++ {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(v)
		req.Acks = -1
		tid := "tx"
		req.TransactionID = &tid
		for ti, batches := range [][][]byte{{small, small, large}, {large}, {small}} {
			rt := kmsg.NewProduceRequestTopic()
			rt.Topic = fmt.Sprintf("topic-%d", ti)
			rt.TopicID = [16]byte{byte(ti + 1)}
			for p, b := range batches {
				rp := kmsg.NewProduceRequestTopicPartition()
				rp.Partition = int32(p)
				rp.Records = b
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
		}
		out[fmt.Sprintf("produce-v%d", v)] = req.AppendTo(nil)
	}
	return out
}

func fetchResponses(t testing.TB) map[string][]byte {
	small, large := recordBatch(10, 100), recordBatch(200, 1000)
	three := append(append(append([]byte{}, small...), large...), small...)
	partial := append(append([]byte{}, large...), large[:5000]...) // a trailing partial batch
	out := map[string][]byte{}
	for v := int16(4); v <= 15; v++ {
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		for ti, recs := range [][][]byte{{three, nil, partial}, {small}} {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = fmt.Sprintf("topic-%d", ti)
			rt.TopicID = [16]byte{byte(ti + 1)}
			for p, r := range recs {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition = int32(p)
				rp.RecordBatches = r
				if p == 1 {
					rp.ErrorCode = 6
					rp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 7, FirstOffset: 3}}
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		out[fmt.Sprintf("fetch-v%d", v)] = resp.AppendTo(nil)
	}
	return out
}

// TestStreamWalkMatchesWholeWalk: walking a frame as it streams gives the
// same counts as walking it whole, for every version, wherever the head
// and the buffered part end, and every byte after the head is forwarded
// once, in order.
func TestStreamWalkMatchesWholeWalk(t *testing.T) {
	bodies := map[string][]byte{}
	for k, v := range produceRequests(t) {
		bodies[k] = v
	}
	for k, v := range fetchResponses(t) {
		bodies[k] = v
	}
	for name, body := range bodies {
		key := int16(protocol.ProduceKey)
		var version int16
		if _, err := fmt.Sscanf(name, "produce-v%d", &version); err != nil {
			key = protocol.FetchKey
			_, err = fmt.Sscanf(name, "fetch-v%d", &version)
			require.NoError(t, err)
		}
		want, err := memCounts(key, version, body)
		require.NoError(t, err, name)
		require.NotEmpty(t, want)
		for _, head := range []int{1, 9, 300, 4096, 65536} {
			for _, pend := range []int{0, 1, 777, 65536} {
				var fwd bytes.Buffer
				got, err := streamCounts(key, version, body, head, pend, fromBytes, &fwd)
				require.NoError(t, err, "%s head %d pend %d", name, head, pend)
				assert.Equal(t, want, got, "%s head %d pend %d", name, head, pend)
				assert.True(t, bytes.Equal(body[min(head, len(body)):], fwd.Bytes()), "%s head %d pend %d: forwarded bytes differ", name, head, pend)
			}
		}
	}
}

// TestStreamWalkSplices runs the walk between real TCP sockets, where the
// record bytes of large batches are spliced by the kernel, and checks the
// counts and the bytes that arrive.
func TestStreamWalkSplices(t *testing.T) {
	body := produceRequests(t)["produce-v9"]
	want, err := memCounts(protocol.ProduceKey, 9, body)
	require.NoError(t, err)

	pair := func() (net.Conn, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		a, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		b, err := ln.Accept()
		require.NoError(t, err)
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	srcW, srcR := pair()
	dstW, dstR := pair()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(dstR); got <- b }()
	head := 4096
	var tc topicCounts
	src := func(rest []byte) io.Reader {
		go func() { srcW.Write(rest); srcW.Close() }()
		return srcR
	}
	tc, err = streamCounts(protocol.ProduceKey, 9, body, head, 0, src, dstW)
	require.NoError(t, err)
	dstW.Close()
	assert.Equal(t, want, tc)
	assert.True(t, bytes.Equal(body[head:], <-got), "forwarded bytes differ")
}

// TestStreamWalkBadInput: a malformed or truncated frame is still forwarded
// whole; the walk reports an error instead of counting.
func TestStreamWalkBadInput(t *testing.T) {
	body := fetchResponses(t)["fetch-v12"]
	bad := bytes.Clone(body)
	bad[10] = 0x7f // the topic array length (after throttle, error, session): far more topics than bytes
	for name, b := range map[string][]byte{"bad count": bad, "cut short": body[:len(body)/2], "garbage": bytes.Repeat([]byte{0xff}, 100_000)} {
		var fwd bytes.Buffer
		_, err := streamCounts(protocol.FetchKey, 12, b, 100, 0, fromBytes, &fwd)
		assert.Error(t, err, name)
		assert.True(t, bytes.Equal(b[100:], fwd.Bytes()), "%s: every byte is forwarded", name)
	}
}

func FuzzStreamWalk(f *testing.F) {
	f.Add(int16(0), int16(9), 50, 10, produceRequests(f)["produce-v9"][:3000])
	f.Add(int16(1), int16(12), 7, 0, fetchResponses(f)["fetch-v12"][:3000])
	f.Add(int16(1), int16(4), 1, 1, []byte{0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, key, version int16, head, pend int, body []byte) {
		if key != protocol.ProduceKey && key != protocol.FetchKey {
			return
		}
		if (key == protocol.ProduceKey && (version < 3 || version > 13)) || (key == protocol.FetchKey && (version < 4 || version > 15)) {
			return
		}
		head, pend = max(head, 0)%(len(body)+1), max(pend, 0)%(len(body)+1)
		var fwd bytes.Buffer
		got, err := streamCounts(key, version, body, head, pend, fromBytes, &fwd)
		require.True(t, bytes.Equal(body[head:], fwd.Bytes()), "every byte after the head is forwarded, once")
		if err == nil {
			want, werr := memCounts(key, version, body)
			if werr == nil {
				require.Equal(t, want, got)
			}
		}
	})
}
