package kafkaproxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// memberKey is what the coordinator connection and the fetch connections of
// one consumer have in common. Fetch names no group and no member id, so a
// consumer's fetches are joined to its group by who sent them (principal),
// what it calls itself (client id) and where from (source host): see
// docs/lineage.md, "How consumers are joined to groups".
type memberKey struct {
	principal, clientID, host string
}

// membership is one consumer's (memberKey's) part in one group.
type membership struct {
	topics    map[string]bool // from OffsetCommit, JoinGroup metadata, ConsumerGroupHeartbeat
	memberIDs map[string]bool
	last      time.Time
}

// groupRegistry joins consumers to groups across connections. It is written
// on coordinator requests (a few per member every few seconds) and read by
// fetch connections only when their generation is stale, so a fetch costs
// one atomic load.
type groupRegistry struct {
	mu      sync.Mutex
	gen     atomic.Uint64 // bumped whenever a lookup could answer differently
	members map[memberKey]map[string]*membership
	maxKeys int
}

// maxGroupsPerMember bounds the groups one consumer (memberKey) is
// remembered in: a client naming ever new group ids must not grow the
// registry without bound. Past it, new groups of that consumer go unjoined.
const maxGroupsPerMember = 64

func newGroupRegistry(maxKeys int) *groupRegistry {
	return &groupRegistry{members: make(map[memberKey]map[string]*membership), maxKeys: maxKeys}
}

// seen records that k is a member of group (as memberID, when known),
// interested in topics.
func (r *groupRegistry) seen(k memberKey, group, memberID string, topics []string, now time.Time) {
	if group == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	gs := r.members[k]
	if gs == nil {
		if len(r.members) >= r.maxKeys {
			return // bounded: past the cap, fetches stay unjoined
		}
		gs = make(map[string]*membership)
		r.members[k] = gs
	}
	m := gs[group]
	changed := false
	if m == nil {
		if len(gs) >= maxGroupsPerMember {
			return
		}
		m = &membership{topics: make(map[string]bool), memberIDs: make(map[string]bool)}
		gs[group] = m
		changed = true
	}
	m.last = now
	if memberID != "" && len(m.memberIDs) < 64 {
		m.memberIDs[memberID] = true
	}
	for _, t := range topics {
		if !m.topics[t] && len(m.topics) < 1024 {
			m.topics[t] = true
			changed = true
		}
	}
	if changed {
		r.gen.Add(1)
	}
}

// touch refreshes k's existing membership of group, reporting whether
// there was one. It allocates nothing: heartbeats call it.
func (r *groupRegistry) touch(k memberKey, group []byte, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.members[k][string(group)]; m != nil {
		m.last = now
		return true
	}
	return false
}

// left forgets k's membership of group (LeaveGroup).
func (r *groupRegistry) left(k memberKey, group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gs := r.members[k]; gs != nil && gs[group] != nil {
		delete(gs, group)
		if len(gs) == 0 {
			delete(r.members, k)
		}
		r.gen.Add(1)
	}
}

// lookup returns the group a fetch of topic by k belongs to, or "" when k is
// in no group. With several groups for one key (one process running several
// consumers under one client id), the group known to read topic wins; if
// none or several do, the fetch is not attributed to a group.
func (r *groupRegistry) lookup(k memberKey, topic string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	gs := r.members[k]
	if len(gs) == 1 {
		for g := range gs {
			return g
		}
	}
	found := ""
	for g, m := range gs {
		if m.topics[topic] {
			if found != "" {
				return ""
			}
			found = g
		}
	}
	return found
}

// expire forgets memberships not refreshed since before. Heartbeats refresh
// them every few seconds, so only consumers that are gone age out.
func (r *groupRegistry) expire(before time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for k, gs := range r.members {
		for g, m := range gs {
			if m.last.Before(before) {
				delete(gs, g)
				changed = true
			}
		}
		if len(gs) == 0 {
			delete(r.members, k)
		}
	}
	if changed {
		r.gen.Add(1)
	}
}
