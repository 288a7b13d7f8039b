package kafkaproxy

import "sync"

// TopicIDs maps topic ids to names and back. Fetch v13+ and Produce v13 name
// topics only by id; authorization, lineage and metrics work by name. The
// cache is filled from every Metadata response the proxy forwards and from
// its own periodic metadata refresh; Proxy.TopicName refreshes on a miss.
type TopicIDs struct {
	mu     sync.RWMutex
	byID   map[[16]byte]string
	byName map[string][16]byte
}

func newTopicIDs() *TopicIDs {
	return &TopicIDs{byID: make(map[[16]byte]string), byName: make(map[string][16]byte)}
}

// Name returns the name of the topic with id.
func (t *TopicIDs) Name(id [16]byte) (string, bool) {
	t.mu.RLock()
	n, ok := t.byID[id]
	t.mu.RUnlock()
	return n, ok
}

// ID returns the id of the named topic.
func (t *TopicIDs) ID(name string) ([16]byte, bool) {
	t.mu.RLock()
	id, ok := t.byName[name]
	t.mu.RUnlock()
	return id, ok
}

// Len returns how many topics are cached.
func (t *TopicIDs) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// put records that name has id. A recreated topic gets a new id; the old id
// is forgotten so it cannot resolve to the new topic.
func (t *TopicIDs) put(id [16]byte, name string) {
	if id == ([16]byte{}) || name == "" {
		return
	}
	t.mu.RLock()
	cur, ok := t.byID[id]
	t.mu.RUnlock()
	if ok && cur == name {
		return
	}
	t.mu.Lock()
	if old, ok := t.byName[name]; ok && old != id {
		delete(t.byID, old)
	}
	t.byID[id] = name
	t.byName[name] = id
	t.mu.Unlock()
}
