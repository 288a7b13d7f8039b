package kafkaproxy

import (
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/lineage"
	"github.com/pipemesh/pipemesh/protocol"
)

// The observe stage counts what flows: bytes, records and batches per edge
// (principal, client id, client software, topic, direction, group), read
// from record batch headers without decompressing. Counters live in memory;
// each connection caches pointers to its edges so the hot path is a map
// lookup by topic bytes and a few atomic adds, with no allocation in steady
// state. A flush on a tick turns the counters into Prometheus metrics and
// lineage observations.
//
// Large frames stream through cut-through (streamHeadBytes): the observe
// stage walks them as they pass (streamWalk), reading only lengths and batch
// headers and letting the kernel splice the record bytes between them, so
// forwarding neither waits nor copies more than it did.

// Direction labels.
const (
	dirProduce = "produce"
	dirConsume = "consume"
)

// edgeKey is what an edge is keyed by on the hot path.
type edgeKey struct {
	principal, clientID, software, host string
	topic, group                        string
	consume                             bool
}

// edgeCounters are one edge's running totals. The data path adds; the
// flusher reads and remembers what it has sent.
type edgeCounters struct {
	key                                       edgeKey
	bytes, records, batches, requests, errors atomic.Int64
	refs                                      atomic.Int32 // connection caches holding it

	// flusher only
	sent [5]int64
	prom *edgeSeries
}

// identity is who is on a connection as the observe stage keys it. It is
// replaced, never changed, when the client id or software changes, so the
// response side can read it with one atomic load.
type identity struct {
	principal, clientID, software, host string
}

// maxCachedEdges bounds a connection's edge cache. A client may name any
// topic (a produce is counted before the broker says whether the topic
// exists); past this many, the cache is emptied before the next walk, so a
// connection holds at most this many plus one frame's topics.
const maxCachedEdges = 1024

// edgeCache is one goroutine's map from topic to edge counters.
type edgeCache struct {
	ident  *identity
	gen    uint64
	byName map[string]*edgeCounters
	byID   map[[16]byte]*edgeCounters
}

// reset empties the cache, dropping its references.
func (ec *edgeCache) reset(id *identity, gen uint64) {
	ec.ident, ec.gen = id, gen
	for _, e := range ec.byName {
		e.refs.Add(-1)
	}
	for _, e := range ec.byID {
		e.refs.Add(-1)
	}
	clear(ec.byName)
	clear(ec.byID)
}

// connObs is a connection's observe stage. The request goroutine owns the
// req* fields and the response goroutine the resp* fields.
type connObs struct {
	t     *telemetry
	c     *conn
	ident atomic.Pointer[identity]

	reqCache edgeCache
	reqWalk  streamWalk
	reqAcc   topicAcc

	respCache    edgeCache // consume edges
	respErrCache edgeCache // produce edges, for produce errors
	respWalk     streamWalk
	respAcc      topicAcc
}

// topicAcc accumulates one walk's counts a topic at a time, so counters are
// added once per topic per frame. Each goroutine has its own.
type topicAcc struct {
	o       *connObs
	ec      *edgeCache
	consume bool
	cur     *edgeCounters
	curName []byte
	curID   [16]byte
	acc     protocol.BatchStats
	errs    int64
	bad     bool
}

func (t *telemetry) newConn(c *conn) *connObs {
	if t == nil {
		return nil
	}
	host := ""
	if a, ok := c.client.RemoteAddr().(*net.TCPAddr); ok {
		host = a.IP.String()
	} else if h, _, err := net.SplitHostPort(c.client.RemoteAddr().String()); err == nil {
		host = h
	}
	o := &connObs{t: t, c: c}
	for _, ec := range []*edgeCache{&o.reqCache, &o.respCache, &o.respErrCache} {
		ec.byName = make(map[string]*edgeCounters)
		ec.byID = make(map[[16]byte]*edgeCounters)
	}
	o.reqAcc = topicAcc{o: o, ec: &o.reqCache}
	o.respAcc = topicAcc{o: o, ec: &o.respCache, consume: true}
	// Method values made once, so walks allocate nothing.
	o.reqWalk.emit = o.reqAcc.add
	o.respWalk.emit = o.respAcc.add
	o.ident.Store(&identity{principal: c.principalName(), host: host})
	return o
}

// now is the start time recorded with a pending request, for the duration
// histograms; zero when telemetry is off.
func (o *connObs) now() time.Time {
	if o == nil {
		return time.Time{}
	}
	return time.Now()
}

// request observes a client request whose header is hdr and whose head (the
// whole body when rest is 0) is frame. For a streamed Produce it starts the
// tee that reqTo hands to CopyRest.
func (o *connObs) request(hdr protocol.RequestHeader, frame []byte, rest int) {
	if o == nil || hdr.BodyOffset < 0 {
		return
	}
	id := o.ident.Load()
	if len(hdr.ClientID) > 0 && string(hdr.ClientID) != id.clientID {
		o.setIdentity(string(hdr.ClientID), id.software)
		id = o.ident.Load()
	}
	if pr := o.c.principalName(); pr != id.principal {
		// Authenticated (SASL) since the last request: later edges are
		// the principal's. The edge caches key on the identity pointer.
		cur := *id
		cur.principal = pr
		o.ident.Store(&cur)
		id = &cur
	}
	body := frame[hdr.BodyOffset:]
	switch hdr.Key {
	case protocol.ProduceKey:
		if hdr.Version < 3 {
			return
		}
		if rest > 0 {
			o.reqAcc.begin()
			o.reqWalk.start(hdr.Key, hdr.Version, body)
			return
		}
		o.walkProduce(hdr.Version, body)
	case protocol.ApiVersionsKey:
		if hdr.Version >= 3 {
			o.observeSoftware(hdr.Version, body, id)
		}
	case joinGroupKey, syncGroupKey, heartbeatKey, offsetCommitKey, leaveGroupKey, consumerGroupHeartbeatKey:
		o.observeGroup(hdr.Key, hdr.Version, body, id)
	}
}

// reqTo is where the streamed rest of the current request goes: through the
// stream walk when the request is being observed.
func (o *connObs) reqTo(w io.Writer) io.Writer {
	if o == nil || !o.reqWalk.active {
		return w
	}
	o.reqWalk.dst = w
	return &o.reqWalk
}

// requestDone finishes the walk of a streamed request.
func (o *connObs) requestDone() {
	if o == nil || !o.reqWalk.active {
		return
	}
	o.reqWalk.walked()
	o.reqAcc.end(o.reqWalk.err)
	o.reqWalk.release()
}

func (o *connObs) setIdentity(clientID, software string) {
	cur := o.ident.Load()
	o.ident.Store(&identity{principal: cur.principal, clientID: clientID, software: software, host: cur.host})
}

func (o *connObs) observeSoftware(version int16, body []byte, id *identity) {
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = version
	if err := req.ReadFrom(body); err != nil {
		o.t.m.observeErrors.Inc()
		return
	}
	sw := req.ClientSoftwareName
	if req.ClientSoftwareVersion != "" {
		sw += "/" + req.ClientSoftwareVersion
	}
	if len(sw) > 128 {
		sw = sw[:128]
	}
	if sw != id.software {
		o.setIdentity(id.clientID, sw)
	}
}

// edge returns the counters for topic (name or id) in dir, from the cache
// or, on a miss, from the proxy-wide table.
func (o *connObs) edge(ec *edgeCache, topic []byte, topicID [16]byte, consume bool) *edgeCounters {
	id := ec.ident
	if topic == nil {
		if e := ec.byID[topicID]; e != nil {
			return e
		}
	} else if e := ec.byName[string(topic)]; e != nil {
		return e
	}
	name := string(topic)
	if topic == nil {
		n, ok := o.t.topics.Name(topicID)
		if !ok {
			// A topic created since the last metadata refresh. Counting
			// must not hold up forwarding: ask for a refresh in the
			// background; until it lands this topic is not counted
			// (pipemesh_kafka_observe_errors_total).
			o.t.refreshTopics(o.c.p, topicID)
			return nil
		}
		name = n
	}
	k := edgeKey{principal: id.principal, clientID: id.clientID, software: id.software, host: id.host, topic: name, consume: consume}
	if consume {
		k.group = o.t.groups.lookup(memberKey{id.principal, id.clientID, id.host}, name)
	}
	e := o.t.edge(k) // holds a reference for this cache
	if topic == nil {
		ec.byID[topicID] = e
	} else {
		ec.byName[name] = e
	}
	return e
}

// freshen empties ec if the connection's identity or (for consume edges)
// the group memberships changed since it was filled, or it holds more than
// maxCachedEdges. It runs at the start of a walk, never inside one, so the
// edge a walk is adding to keeps the cache's reference until the walk's
// counts are in.
func (o *connObs) freshen(ec *edgeCache, consume bool) {
	id := o.ident.Load()
	gen := uint64(0)
	if consume {
		gen = o.t.groups.gen.Load()
	}
	if ec.ident != id || ec.gen != gen || len(ec.byName)+len(ec.byID) > maxCachedEdges {
		ec.reset(id, gen)
	}
}

// close drops the connection's references to its edges, so that edges no
// connection uses can be forgotten once flushed.
func (o *connObs) close() {
	if o == nil {
		return
	}
	for _, ec := range []*edgeCache{&o.reqCache, &o.respCache, &o.respErrCache} {
		ec.reset(nil, 0)
	}
}

// walkProduce counts a whole Produce request body.
func (o *connObs) walkProduce(version int16, body []byte) {
	o.reqAcc.begin()
	err := protocol.WalkProduceRequest(version, body, o.reqAcc.partition)
	o.reqAcc.end(err)
}

func (a *topicAcc) begin() {
	a.o.freshen(a.ec, a.consume)
	a.cur, a.curName, a.curID, a.acc, a.errs, a.bad = nil, a.curName[:0], [16]byte{}, protocol.BatchStats{}, 0, false
}

// partition counts one partition of an in-memory walk.
func (a *topicAcc) partition(pd protocol.PartitionData) {
	s, err := protocol.CountBatches(pd.Records)
	if err != nil {
		a.bad = true
	}
	a.add(pd.Topic, pd.TopicID, pd.ErrorCode, s)
}

// add adds one partition's counts to the current topic's; a new topic first
// flushes the last one, so counters are added once per topic per frame.
func (a *topicAcc) add(topic []byte, id [16]byte, code int16, s protocol.BatchStats) {
	if a.cur == nil || string(topic) != string(a.curName) || (topic == nil && id != a.curID) {
		a.flush()
		a.cur = a.o.edge(a.ec, topic, id, a.consume)
		a.curName, a.curID = append(a.curName[:0], topic...), id
		if a.cur == nil {
			a.bad = true
		}
	}
	a.acc.Batches += s.Batches
	a.acc.Records += s.Records
	a.acc.Bytes += s.Bytes
	if code != 0 {
		a.errs++
		a.o.t.countError(protocol.FetchKey, code)
	}
}

func (a *topicAcc) flush() {
	if e := a.cur; e != nil {
		e.requests.Add(1)
		if a.acc.Bytes != 0 {
			e.bytes.Add(a.acc.Bytes)
			e.records.Add(a.acc.Records)
			e.batches.Add(int64(a.acc.Batches))
		}
		if a.errs != 0 {
			e.errors.Add(a.errs)
		}
	}
	a.cur, a.acc, a.errs = nil, protocol.BatchStats{}, 0
}

func (a *topicAcc) end(err error) {
	a.flush()
	if err != nil || a.bad {
		a.o.t.m.observeErrors.Inc()
	}
}

// response observes a broker response before it is forwarded. For a
// streamed Fetch it starts the tee that respTo hands to CopyRest.
func (o *connObs) response(p pending, body []byte, rest int) {
	if o == nil {
		return
	}
	o.t.observeDuration(p.key, scopeUpstream, p.start)
	if len(body) < responseHeaderBytes(p) {
		return
	}
	switch p.key {
	case protocol.FetchKey:
		if p.version < 4 {
			return
		}
		body = body[responseHeaderBytes(p):]
		if rest > 0 {
			o.respAcc.begin()
			o.respWalk.start(p.key, p.version, body)
			return
		}
		o.walkFetch(p.version, body)
	case protocol.ProduceKey:
		if p.version < 3 || rest > 0 {
			return // produce responses are small; a huge one is not read
		}
		o.walkProduceResponse(p.version, body[responseHeaderBytes(p):])
	}
}

// respTo is where the streamed rest of the current response goes.
func (o *connObs) respTo(w io.Writer) io.Writer {
	if o == nil || !o.respWalk.active {
		return w
	}
	o.respWalk.dst = w
	return &o.respWalk
}

// responseDone finishes observing a response that has been written out.
func (o *connObs) responseDone(p pending) {
	if o == nil {
		return
	}
	if o.respWalk.active {
		o.respWalk.walked()
		o.respAcc.end(o.respWalk.err)
		o.respWalk.release()
	}
	o.t.observeDuration(p.key, scopeTotal, p.start)
}

func (o *connObs) walkFetch(version int16, body []byte) {
	o.respAcc.begin()
	_, err := protocol.WalkFetchResponse(version, body, o.respAcc.partition)
	o.respAcc.end(err)
}

func (o *connObs) walkProduceResponse(version int16, body []byte) {
	o.freshen(&o.respErrCache, false)
	err := walkProduceErrors(version, body, o.produceError)
	if err != nil {
		o.t.m.observeErrors.Inc()
	}
}

func (o *connObs) produceError(topic []byte, id [16]byte, code int16) {
	o.t.countError(protocol.ProduceKey, code)
	if e := o.edge(&o.respErrCache, topic, id, false); e != nil {
		e.errors.Add(1)
	}
}

// responseHeaderBytes is the size of the response header before the body:
// the correlation id, and a tagged-field count in flexible versions (Produce
// v9+, Fetch v12+). The observed APIs never carry header tags in practice;
// a header with some is walked as part of the body and fails the walk,
// which is counted, not fatal.
func responseHeaderBytes(p pending) int {
	switch {
	case p.key == protocol.ProduceKey && p.version >= 9,
		p.key == protocol.FetchKey && p.version >= 12:
		return 5
	}
	return 4
}

// API keys of the coordinator requests that join consumers to groups.
const (
	offsetCommitKey           = 8
	joinGroupKey              = 11
	heartbeatKey              = 12
	leaveGroupKey             = 13
	syncGroupKey              = 14
	consumerGroupHeartbeatKey = 68
)

// observeGroup records group membership from a coordinator request. These
// come a few times per member every few seconds, so decoding them with kmsg
// (which allocates) is fine.
func (o *connObs) observeGroup(key, version int16, body []byte, id *identity) {
	if key == heartbeatKey {
		// The most frequent group request (every few seconds per
		// member) only refreshes a membership: read just the group id,
		// without allocating, and decode in full only when the
		// membership is new.
		if g, ok := heartbeatGroup(version, body); ok && o.t.groups.touch(memberKey{id.principal, id.clientID, id.host}, g, time.Now()) {
			return
		}
	}
	req := kmsg.RequestForKey(key)
	if req == nil {
		return
	}
	req.SetVersion(version)
	if err := req.ReadFrom(body); err != nil {
		o.t.m.observeErrors.Inc()
		return
	}
	k := memberKey{id.principal, id.clientID, id.host}
	now := time.Now()
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		var topics []string
		if r.ProtocolType == "consumer" {
			for _, p := range r.Protocols {
				var meta kmsg.ConsumerMemberMetadata
				if err := meta.ReadFrom(p.Metadata); err == nil {
					topics = append(topics, meta.Topics...)
				}
			}
		}
		o.t.groups.seen(k, r.Group, r.MemberID, topics, now)
	case *kmsg.SyncGroupRequest:
		o.t.groups.seen(k, r.Group, r.MemberID, nil, now)
	case *kmsg.HeartbeatRequest:
		o.t.groups.seen(k, r.Group, r.MemberID, nil, now)
	case *kmsg.OffsetCommitRequest:
		topics := make([]string, 0, len(r.Topics))
		for _, t := range r.Topics {
			if t.Topic != "" {
				topics = append(topics, t.Topic)
			} else if n, ok := o.t.topics.Name(t.TopicID); ok {
				topics = append(topics, n)
			}
		}
		o.t.groups.seen(k, r.Group, r.MemberID, topics, now)
	case *kmsg.ConsumerGroupHeartbeatRequest:
		if r.MemberEpoch < 0 {
			o.t.groups.left(k, r.Group) // -1 leaves, -2 leaves a static member
			return
		}
		o.t.groups.seen(k, r.Group, r.MemberID, r.SubscribedTopicNames, now)
	case *kmsg.LeaveGroupRequest:
		o.t.groups.left(k, r.Group)
	}
}

var _ io.ReaderFrom = (*streamWalk)(nil)

// edgeObservation turns an edge's deltas into a lineage observation.
func edgeObservation(k edgeKey, d [5]int64, at time.Time) lineage.Observation {
	app := lineage.NodeRef{Type: lineage.Application, Name: appName(k.principal, k.clientID)}
	topic := lineage.NodeRef{Type: lineage.Topic, Name: k.topic}
	o := lineage.Observation{
		Bytes: d[0], Records: d[1], Batches: d[2], Requests: d[3], Errors: d[4], At: at,
		Client: lineage.Client{Principal: k.principal, ClientID: k.clientID, Software: k.software, Host: k.host},
	}
	switch {
	case !k.consume:
		o.From, o.To, o.Type = app, topic, lineage.Produces
	case k.group != "":
		o.From, o.To, o.Type = topic, lineage.NodeRef{Type: lineage.Group, Name: k.group}, lineage.Consumes
	default:
		o.From, o.To, o.Type = topic, app, lineage.Consumes
	}
	return o
}

// appName names an application node: its client id, qualified by its
// principal once clients authenticate.
func appName(principal, clientID string) string {
	if clientID == "" {
		clientID = "(no client id)"
	}
	if principal == "" || principal == anonymous {
		return clientID
	}
	return principal + "/" + clientID
}

// heartbeatGroup reads the group id at the start of a Heartbeat request
// body: a string, compact from v4.
func heartbeatGroup(version int16, body []byte) ([]byte, bool) {
	if version >= 4 {
		n, k := binary.Uvarint(body)
		if k <= 0 || n == 0 || n-1 > uint64(len(body)-k) {
			return nil, false
		}
		return body[k : k+int(n-1)], true
	}
	if len(body) < 2 {
		return nil, false
	}
	n := int(int16(binary.BigEndian.Uint16(body)))
	if n < 0 || n > len(body)-2 {
		return nil, false
	}
	return body[2 : 2+n], true
}
