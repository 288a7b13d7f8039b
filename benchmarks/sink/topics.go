package sink

import (
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// topic is a topic and its partitions. Everything but the partitions'
// logs is fixed at creation.
type topic struct {
	name  string
	id    [16]byte
	parts []*partition
	// meta is the Metadata answer's partition list, built once and shared
	// read-only by every response.
	meta []kmsg.MetadataResponseTopicPartition
}

// partition returns partition i, or nil when there is no such partition.
func (t *topic) partition(i int32) *partition {
	if i < 0 || int(i) >= len(t.parts) {
		return nil
	}
	return t.parts[i]
}

// topicMap is one immutable version of the topic set.
type topicMap struct {
	byName map[string]*topic
	byID   map[[16]byte]*topic
}

// topics is the topic set. Lookups, on every produce and fetch, load an
// immutable map without locking; creation and deletion, which are rare,
// copy it under mu and swap it in.
type topics struct {
	cur atomic.Pointer[topicMap]
	mu  sync.Mutex
}

func (ts *topics) init() {
	ts.cur.Store(&topicMap{byName: map[string]*topic{}, byID: map[[16]byte]*topic{}})
}

func (ts *topics) byName(name string) *topic { return ts.cur.Load().byName[name] }

func (ts *topics) byID(id [16]byte) *topic { return ts.cur.Load().byID[id] }

// sorted returns every topic by name.
func (ts *topics) sorted() []*topic {
	m := ts.cur.Load().byName
	out := make([]*topic, 0, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[name])
	}
	return out
}

// create returns the named topic, creating it with n partitions when it
// does not exist; created says which. name must be valid and is copied.
func (ts *topics) create(s *Sink, name string, n int32) (t *topic, created bool) {
	if t := ts.byName(name); t != nil {
		return t, false
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	cur := ts.cur.Load()
	if t := cur.byName[name]; t != nil {
		return t, false
	}
	t = &topic{name: strings.Clone(name), parts: make([]*partition, n), meta: make([]kmsg.MetadataResponseTopicPartition, n)}
	for {
		rand.Read(t.id[:])
		if _, dup := cur.byID[t.id]; !dup && t.id != ([16]byte{}) {
			break
		}
	}
	for i := range n {
		leader := s.leaderOf(i)
		t.parts[i] = newPartition(s.ret, leader)
		m := kmsg.NewMetadataResponseTopicPartition()
		m.Partition, m.Leader, m.LeaderEpoch = i, leader, 0
		m.Replicas, m.ISR, m.OfflineReplicas = []int32{leader}, []int32{leader}, []int32{}
		t.meta[i] = m
	}
	next := &topicMap{byName: maps.Clone(cur.byName), byID: maps.Clone(cur.byID)}
	next.byName[t.name], next.byID[t.id] = t, t
	ts.cur.Store(next)
	s.log.Info("sink topic created", "topic", t.name, "partitions", n)
	return t, true
}

// delete removes t and frees its data. Requests that already hold one of
// its partitions see it as deleted.
func (ts *topics) delete(t *topic) bool {
	ts.mu.Lock()
	cur := ts.cur.Load()
	if cur.byName[t.name] != t {
		ts.mu.Unlock()
		return false
	}
	next := &topicMap{byName: maps.Clone(cur.byName), byID: maps.Clone(cur.byID)}
	delete(next.byName, t.name)
	delete(next.byID, t.id)
	ts.cur.Store(next)
	ts.mu.Unlock()
	for _, p := range t.parts {
		p.remove()
	}
	return true
}

// validTopicName checks a topic name as Kafka does (Topic.validate): 1 to
// 249 characters of ASCII letters, digits, '.', '_' and '-', and not "."
// or "..".
func validTopicName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the topic name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	case len(name) > 249:
		return fmt.Errorf("topic name of %d characters is longer than 249", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q has %q; use ASCII letters, digits, '.', '_' and '-'", name, c)
		}
	}
	return nil
}

// lookup resolves partition i of t on broker self for a produce or fetch. It
// returns the error code the partition gets instead of data: missing when the
// topic is unknown, UNKNOWN_TOPIC_OR_PARTITION, or NOT_LEADER_OR_FOLLOWER
// (with the partition, so the caller can hint its leader).
func lookup(t *topic, i, self int32, missing int16) (*partition, int16) {
	if t == nil {
		return nil, missing
	}
	p := t.partition(i)
	switch {
	case p == nil:
		return nil, kerr.UnknownTopicOrPartition.Code
	case p.leader != self:
		return p, kerr.NotLeaderForPartition.Code
	}
	return p, 0
}
