package sink

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// errClosing ends a connection whose fetch was waiting when the Sink
// closed.
var errClosing = errors.New("the sink is closing")

// noAborted is the aborted transaction list of every partition: empty,
// not null, which some clients do not expect.
var noAborted = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}

// fetchState is a connection's reusable fetch scratch.
type fetchState struct {
	w         *waiter
	timer     *time.Timer
	reads     reads        // batch runs found by partition.read, referenced
	scratch   []byte       // runs joined, for a partition spanning segments
	waitingOn []*partition // partitions w is registered with
}

func (f *fetchState) stopTimer() {
	if f.timer != nil {
		f.timer.Stop()
	}
}

// handleFetch answers a Fetch with whole stored batches. It waits up to
// MaxWaitMillis while fewer than MinBytes (at least one byte) are there to
// return and no partition has an error, woken by appends to any of the
// partitions. It always answers session id 0: the sink keeps no fetch
// sessions (KIP-227), so clients send full requests. Fetch v13+ names
// topics by id.
func (c *conn) handleFetch(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := &c.fetchReq
	req.Version = h.Version
	// Topic names alias the frame, which outlives the wait and the
	// response.
	if err := req.UnsafeReadFrom(body); err != nil {
		return nil, fmt.Errorf("%w: %w", protocol.ErrMalformed, err)
	}
	need := max(int(req.MinBytes), 1)
	n, errs := c.fillFetch(req, false)
	if n >= need || errs || req.MaxWaitMillis <= 0 {
		return &c.fetchResp, nil
	}
	deadline := time.Now().Add(time.Duration(req.MaxWaitMillis) * time.Millisecond)
	f := &c.fetch
	for {
		f.w.drain()
		n, errs = c.fillFetch(req, true)
		left := time.Until(deadline)
		if n >= need || errs || left <= 0 {
			c.unregister()
			return &c.fetchResp, nil
		}
		open, err := c.wait(left)
		c.unregister()
		if err != nil {
			return nil, err
		}
		if !open {
			return nil, errClosing
		}
	}
}

func (c *conn) unregister() {
	f := &c.fetch
	for _, p := range f.waitingOn {
		p.unregister(f.w)
	}
	clear(f.waitingOn)
	f.waitingOn = f.waitingOn[:0]
}

// fillFetch builds the response to req in c.fetchResp and returns the
// bytes of batches in it and whether any partition has an error. With
// register set, the connection's waiter is registered with every partition
// read, atomically with the read.
func (c *conn) fillFetch(req *kmsg.FetchRequest, register bool) (n int, errs bool) {
	f := &c.fetch
	f.reads.release()
	f.scratch = f.scratch[:0]
	var w *waiter
	if register {
		w = f.w
	}
	byID := req.Version >= 13
	leaderHints := req.Version >= 16 // KIP-951
	maxBytes := max(int(req.MaxBytes), 0)

	resp := &c.fetchResp
	resp.Version, resp.ThrottleMillis, resp.ErrorCode, resp.SessionID = req.Version, 0, 0, 0
	resp.Brokers = resp.Brokers[:0]
	resp.Topics = grow(resp.Topics, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		parts := st.Partitions[:0]
		*st = kmsg.FetchResponseTopic{Topic: rt.Topic, TopicID: rt.TopicID}
		t, missing := c.s.topics.byName(rt.Topic), kerr.UnknownTopicOrPartition.Code
		if byID {
			t, missing = c.s.topics.byID(rt.TopicID), kerr.UnknownTopicID.Code
		}
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			parts = append(parts, kmsg.FetchResponseTopicPartition{})
			sp := &parts[len(parts)-1]
			sp.Default()
			sp.Partition = rp.Partition
			sp.HighWatermark = -1
			sp.AbortedTransactions = noAborted
			sp.RecordBatches = []byte{}
			p, code := lookup(t, rp.Partition, c.b.id, missing)
			switch {
			case code == kerr.NotLeaderForPartition.Code:
				sp.ErrorCode = code
				if leaderHints {
					sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = p.leader, 0
					resp.Brokers = c.addFetchBroker(resp.Brokers, p.leader)
				}
			case code != 0:
				sp.ErrorCode = code
			default:
				limit := max(min(int(rp.PartitionMaxBytes), maxBytes-n), 0)
				first := len(f.reads.runs)
				r := p.read(&f.reads, rp.FetchOffset, limit, n == 0, w)
				if r.registered {
					f.waitingOn = append(f.waitingOn, p)
				}
				sp.ErrorCode = r.code
				if r.code == 0 {
					sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = r.hw, r.hw, r.logStart
				}
				switch runs := f.reads.runs[first:]; len(runs) {
				case 0:
				case 1:
					sp.RecordBatches = runs[0]
				default:
					// The batches span segments: join them here, a
					// copy more than the one encoding makes.
					start := len(f.scratch)
					for _, run := range runs {
						f.scratch = append(f.scratch, run...)
					}
					sp.RecordBatches = f.scratch[start:len(f.scratch):len(f.scratch)]
				}
				n += r.n
			}
			if sp.ErrorCode != 0 {
				errs = true
			}
		}
		st.Partitions = parts
	}
	return n, errs
}

// releaseFetch drops the response's references to stored batches once it
// is written (or failed), so that their segments can be reused.
func (c *conn) releaseFetch() {
	for i := range c.fetchResp.Topics {
		for j := range c.fetchResp.Topics[i].Partitions {
			c.fetchResp.Topics[i].Partitions[j].RecordBatches = nil
		}
	}
	c.fetch.reads.release()
	if cap(c.fetch.scratch) > keepOutBytes {
		c.fetch.scratch = nil
	}
}

// addFetchBroker adds broker id to the KIP-951 endpoint list once.
func (c *conn) addFetchBroker(list []kmsg.FetchResponseBroker, id int32) []kmsg.FetchResponseBroker {
	if slices.ContainsFunc(list, func(b kmsg.FetchResponseBroker) bool { return b.NodeID == id }) {
		return list
	}
	b := c.s.brokers[id]
	return append(list, kmsg.FetchResponseBroker{NodeID: b.id, Host: b.host, Port: b.port})
}
