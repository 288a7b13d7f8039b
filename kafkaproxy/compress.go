package kafkaproxy

import (
	"encoding/binary"
	"time"

	"github.com/pipemesh/pipemesh/protocol"
)

// compressor is the proxy-wide part of the compression stage: the rules in
// force, the shared codecs, and the worker slots that bound how many batches
// are recompressed at once. A reload builds a new compressor around the same
// codecs and slots.
type compressor struct {
	rules   topicMatcher[compressionTarget]
	codecs  *protocol.Codecs
	workers chan struct{}
	m       *shapeMetrics
}

type compressionTarget struct {
	protocol.Recompression
}

func newCompressor(rules []CompressionRule, maxDecompressed int, workers int, m *shapeMetrics) (*compressor, error) {
	codecs, err := protocol.NewCodecs(maxDecompressed)
	if err != nil {
		return nil, err
	}
	return compressorFor(rules, codecs, make(chan struct{}, workers), m), nil
}

// compressorFor compiles rules around existing codecs and worker slots; nil
// without rules.
func compressorFor(rules []CompressionRule, codecs *protocol.Codecs, workers chan struct{}, m *shapeMetrics) *compressor {
	if len(rules) == 0 {
		return nil
	}
	z := &compressor{codecs: codecs, workers: workers, m: m}
	for _, r := range rules {
		z.rules.add(r.Topic, r.Prefixed, &compressionTarget{protocol.Recompression{Codec: r.Codec, Level: r.Level, MinBatchBytes: r.MinBatchBytes}})
	}
	return z
}

// connCompression is one connection's reusable recompression buffers.
type connCompression struct {
	scratch []byte // decompressed records of one batch
	recs    []byte // one partition's rewritten records
	out     []byte // the rewritten frame
}

// keepCompressionBytes is the largest buffer a connection keeps between
// requests; larger ones are left to the collector, so an idle connection
// that once rewrote a large request does not hold its memory.
const keepCompressionBytes = 1 << 20

// produceTarget is the rule for a partition's topic, by name or (Produce
// v13) by id through the topic id cache; nil when no rule covers it.
func (c *conn) produceTarget(z *compressor, pd *protocol.PartitionData) (*compressionTarget, []byte) {
	if pd.Topic != nil {
		return z.rules.match(pd.Topic), pd.Topic
	}
	name, ok := c.p.topics.Name(pd.TopicID)
	if !ok {
		return nil, nil
	}
	return z.rules.matchString(name), []byte(name)
}

// compressProduce is the compression stage under the rules of z (nil: none;
// read once per request by shapeRequest). raw is the request frame as it
// stands (size prefix included; maybe rewritten by authorization), frame the
// same without the prefix, as far as it has been read. It returns the frame to
// forward, size prefix included: the client's own, or a rewritten one in
// which the batches of topics with a rule are recompressed. held is memory
// taken from the budget for it, to be released once the frame is written.
// ok is false when the connection closed while waiting for memory.
func (c *conn) compressProduce(z *compressor, hdr *protocol.RequestHeader, raw, frame []byte) (out []byte, held int64, ok bool, err error) {
	if z == nil || hdr.Version < 3 || hdr.BodyOffset < 0 {
		return raw, 0, true, nil
	}
	// A request streamed past its head is read whole if a topic it names
	// has a rule, or if the head ends before all its topics are named (their
	// names follow earlier records); otherwise it streams through.
	if c.cr.Rest() > 0 {
		if !c.headNeedsWhole(hdr, frame, func(topic []byte, id [16]byte) bool {
			t, _ := c.produceTarget(z, &protocol.PartitionData{Topic: topic, TopicID: id})
			return t != nil
		}) {
			return raw, 0, true, nil
		}
		if frame, held, ok, err = c.readWhole(frame); !ok || err != nil {
			return nil, held, ok, err
		}
		raw = c.cr.Frame()
	}
	body := frame[hdr.BodyOffset:]
	need := false
	if protocol.WalkProduceRequest(hdr.Version, body, func(pd protocol.PartitionData) {
		if t, _ := c.produceTarget(z, &pd); t != nil {
			need = true
		}
	}) != nil || !need {
		// Nothing to rewrite, or a body the broker will judge.
		return raw, held, true, nil
	}
	// The rewritten frame and one batch's decompressed records, estimated
	// from the request's size (a batch that inflates more is still capped
	// by the decompression cap).
	extra := int64(2 * len(raw))
	if !c.p.sh.budget.requests.acquire(extra, c.done) {
		return nil, held, false, nil
	}
	held += extra
	cc := &c.sh.comp
	o := append(cc.out[:0], 0, 0, 0, 0)
	o = append(o, frame[:hdr.BodyOffset]...)
	o, err = protocol.RewriteProduceRequest(o, hdr.Version, body, func(pd protocol.PartitionData) ([]byte, bool) {
		t, topic := c.produceTarget(z, &pd)
		if t == nil {
			return nil, false
		}
		z.workers <- struct{}{}
		start := time.Now()
		var st protocol.RecompressStats
		var changed bool
		cc.recs, cc.scratch, st, changed = z.codecs.RecompressRecords(cc.recs[:0], pd.Records, cc.scratch, t.Recompression)
		z.m.recompSeconds.Add(time.Since(start).Seconds())
		<-z.workers
		z.m.recompressed(topic, t.Codec, &st)
		if st.Failure != nil {
			c.p.log.Debug("record batches left as sent; the broker will judge them", append(c.attrs(),
				"topic", string(topic), "partition", pd.Partition, "batches", st.Skipped, "reason", st.Failure)...)
		}
		return cc.recs, changed
	})
	if err != nil {
		return raw, held, true, nil // the walk passed, so this does not happen; forward as sent
	}
	binary.BigEndian.PutUint32(o, uint32(len(o)-4))
	cc.out = o
	if cap(cc.out) > keepCompressionBytes {
		cc.out = nil
	}
	if cap(cc.scratch) > keepCompressionBytes {
		cc.scratch = nil
	}
	if cap(cc.recs) > keepCompressionBytes {
		cc.recs = nil
	}
	return o, held, true, nil
}
