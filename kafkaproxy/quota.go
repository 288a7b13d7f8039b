package kafkaproxy

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// quotaKind is what a quota limits.
type quotaKind int

const (
	quotaProduce quotaKind = iota
	quotaFetch
	quotaRequest
	quotaKinds
)

func (k quotaKind) String() string {
	return [...]string{"produce", "fetch", "request"}[k]
}

// Throttle shape. A principal may run ahead of its rate by quotaBurst before
// it is throttled (Kafka measures rates over a window of about that order);
// one throttle lasts at most maxThrottle, as a broker caps it at its quota
// window, and the debt past that is throttled on the next request.
const (
	quotaBurst  = time.Second
	maxThrottle = 10 * time.Second
)

// rate is one allowance: a virtual clock (GCRA) that moves ahead by each
// charge divided by the rate. How far it runs ahead of now, beyond the burst,
// is the throttle time.
type rate struct {
	perSec float64
	mu     sync.Mutex
	tat    int64 // unix nanos the allowance is used up to
}

func (r *rate) charge(now int64, amount float64) time.Duration {
	r.mu.Lock()
	if r.tat < now {
		r.tat = now
	}
	r.tat += int64(amount / r.perSec * float64(time.Second))
	over := time.Duration(r.tat-now) - quotaBurst
	r.mu.Unlock()
	return min(max(over, 0), maxThrottle)
}

// quotas holds the rules and every principal's allowances. Allowances are
// per (rule, principal): each principal that "User:*" matches has its own.
type quotas struct {
	rules []QuotaRule // never changed: a reload builds new quotas
	m     *shapeMetrics

	mu      sync.Mutex
	byRule  map[rateKey]*rate
	byPrinc map[string]*principalQuotas
}

type rateKey struct {
	rule      int
	principal string
	kind      quotaKind
}

// principalQuotas is what applies to one principal, resolved once.
type principalQuotas struct {
	owner     *quotas // the rules it was resolved under
	principal string
	wide      [quotaKinds]*rate // the most specific principal-wide rule
	produce   topicMatcher[rate]
	fetch     topicMatcher[rate]
	metrics   *principalThrottle
}

// newQuotas compiles rules; nil without any. Allowances of prev (the rules
// a reload replaces) whose rule is unchanged carry over, so a reload does
// not forgive debts or reset anyone's burst.
func newQuotas(rules []QuotaRule, m *shapeMetrics, prev *quotas) *quotas {
	if len(rules) == 0 {
		return nil
	}
	q := &quotas{rules: rules, m: m, byRule: make(map[rateKey]*rate), byPrinc: make(map[string]*principalQuotas)}
	if prev == nil {
		return q
	}
	moved := map[int]int{} // old rule index -> new
	for j, old := range prev.rules {
		for i, r := range rules {
			if r == old {
				moved[j] = i
				break
			}
		}
	}
	prev.mu.Lock()
	for k, r := range prev.byRule {
		if i, ok := moved[k.rule]; ok {
			q.byRule[rateKey{i, k.principal, k.kind}] = r
		}
	}
	prev.mu.Unlock()
	return q
}

// forPrincipal resolves the allowances of principal: for each kind, the
// principal-wide rule that names it most specifically; and for each topic
// pattern, the topic rule that does.
func (q *quotas) forPrincipal(principal string) *principalQuotas {
	q.mu.Lock()
	defer q.mu.Unlock()
	if pq := q.byPrinc[principal]; pq != nil {
		return pq
	}
	pq := &principalQuotas{owner: q, principal: principal, metrics: q.m.principal(principal)}
	get := func(i int, kind quotaKind, perSec float64) *rate {
		k := rateKey{i, principal, kind}
		r := q.byRule[k]
		if r == nil {
			r = &rate{perSec: perSec}
			q.byRule[k] = r
		}
		return r
	}
	var wideRank [quotaKinds]int
	type topicPick struct {
		rank int
		rule int
	}
	topicRules := map[[2]string]topicPick{}
	var order [][2]string
	for i, r := range q.rules {
		rank := principalMatch(r.Principal, principal)
		if rank == 0 {
			continue
		}
		if r.Topic == "" && !r.Prefixed {
			for kind, perSec := range [quotaKinds]float64{float64(r.ProduceBytesPerSecond), float64(r.FetchBytesPerSecond), r.RequestsPerSecond} {
				if perSec > 0 && rank > wideRank[kind] {
					wideRank[kind] = rank
					pq.wide[kind] = get(i, quotaKind(kind), perSec)
				}
			}
			continue
		}
		pat := [2]string{r.Topic, map[bool]string{true: "prefixed"}[r.Prefixed]}
		if cur, ok := topicRules[pat]; !ok || rank > cur.rank {
			if !ok {
				order = append(order, pat)
			}
			topicRules[pat] = topicPick{rank, i}
		}
	}
	for _, pat := range order {
		i := topicRules[pat].rule
		r := q.rules[i]
		if r.ProduceBytesPerSecond > 0 {
			pq.produce.add(r.Topic, r.Prefixed, get(i, quotaProduce, float64(r.ProduceBytesPerSecond)))
		}
		if r.FetchBytesPerSecond > 0 {
			pq.fetch.add(r.Topic, r.Prefixed, get(i, quotaFetch, float64(r.FetchBytesPerSecond)))
		}
	}
	q.byPrinc[principal] = pq
	return pq
}

// quotasFor returns the allowances of the connection's principal under q,
// the quota rules in force (nil: none), re-resolved when the principal
// changed (after authentication) or the rules did (a policy reload).
func (c *conn) quotasFor(q *quotas) *principalQuotas {
	if q == nil {
		if c.sh.pq != nil {
			c.sh.pq = nil
			c.sh.pqShared.Store(nil)
		}
		return nil
	}
	pr := c.principalName()
	if pq := c.sh.pq; pq != nil && pq.owner == q && pq.principal == pr {
		return pq
	}
	c.sh.pq = q.forPrincipal(pr)
	c.sh.pqShared.Store(c.sh.pq)
	return c.sh.pq
}

// exemptFromRequestQuota is what Kafka does not count against request
// quotas: the requests a client needs to learn versions and authenticate.
func exemptFromRequestQuota(key int16) bool {
	const saslHandshake, saslAuthenticate = 17, 36
	return key == protocol.ApiVersionsKey || key == saslHandshake || key == saslAuthenticate
}

// chargeRequest is the quota stage for a request: it charges the request
// quota and, for Produce, the produce byte quotas (the bytes the client
// sent, before any recompression), and returns the throttle the response
// must carry. body is the request body when whole, else nil; size is the
// whole frame's size.
func (c *conn) chargeRequest(pq *principalQuotas, hdr *protocol.RequestHeader, body []byte, size int) time.Duration {
	now := time.Now().UnixNano()
	var throttle time.Duration
	note := func(k quotaKind, d time.Duration) {
		if d > 0 {
			pq.metrics.seconds[k].Add(d.Seconds())
			throttle = max(throttle, d)
		}
	}
	if r := pq.wide[quotaRequest]; r != nil && !exemptFromRequestQuota(hdr.Key) {
		note(quotaRequest, r.charge(now, 1))
	}
	if hdr.Key != protocol.ProduceKey {
		return throttle
	}
	if r := pq.wide[quotaProduce]; r != nil {
		note(quotaProduce, r.charge(now, float64(size)))
	}
	if !pq.produce.empty() && body != nil && hdr.Version >= 3 {
		_ = protocol.WalkProduceRequest(hdr.Version, body, func(pd protocol.PartitionData) {
			if r := c.topicRate(&pq.produce, &pd); r != nil {
				note(quotaProduce, r.charge(now, float64(len(pd.Records))))
			}
		})
	}
	return throttle
}

// topicRate is the rate of the partition's topic, by name or by id.
func (c *conn) topicRate(m *topicMatcher[rate], pd *protocol.PartitionData) *rate {
	if pd.Topic != nil {
		return m.match(pd.Topic)
	}
	if name, ok := c.p.topics.Name(pd.TopicID); ok {
		return m.matchString(name)
	}
	return nil
}

// chargeFetch charges the fetch byte quotas for a Fetch response of size
// bytes; body is the response body when whole (for per-topic quotas).
func (c *conn) chargeFetch(pq *principalQuotas, version int16, body []byte, size int) time.Duration {
	now := time.Now().UnixNano()
	var throttle time.Duration
	if r := pq.wide[quotaFetch]; r != nil {
		throttle = r.charge(now, float64(size))
	}
	if !pq.fetch.empty() && body != nil && version >= 4 {
		_, _ = protocol.WalkFetchResponse(version, body, func(pd protocol.PartitionData) {
			if r := c.topicRate(&pq.fetch, &pd); r != nil && len(pd.Records) > 0 {
				throttle = max(throttle, r.charge(now, float64(len(pd.Records))))
			}
		})
	}
	if throttle > 0 {
		pq.metrics.seconds[quotaFetch].Add(throttle.Seconds())
	}
	return throttle
}

// pause makes the request side read nothing more from the client until d
// from now (KIP-219: the broker mutes the channel after a throttled
// response). It only ever extends a pause.
func (c *conn) pause(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := c.sh.pauseUntil.Load()
		if cur >= until || c.sh.pauseUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// announceThrottle writes throttle into the response frame out (size prefix
// included) unless the broker's own throttle is longer, and returns the
// frame to send. Fetch responses (v1+) hold throttle_time_ms first in the
// body and are patched in place, streamed or not; other responses are
// decoded and re-encoded when whole. A response it cannot rewrite goes out
// as it came: the pause still applies.
func (c *conn) announceThrottle(p *pending, out []byte, whole bool, throttle time.Duration) []byte {
	ms := int32(min(throttle.Milliseconds()+1, int64(maxThrottle/time.Millisecond)))
	body := out[4:]
	flexible := protocol.FlexibleResponseHeader(p.key, p.version)
	off, err := protocol.ResponseBodyOffset(body, flexible)
	if err != nil {
		return out
	}
	if p.key == protocol.FetchKey && p.version >= 1 {
		if len(body) >= off+4 {
			if cur := int32(binary.BigEndian.Uint32(body[off:])); cur < ms {
				binary.BigEndian.PutUint32(body[off:], uint32(ms))
			}
			return out
		}
		c.p.sh.m.throttleRewriteNo.Inc()
		return out
	}
	resp := kmsg.ResponseForKey(p.key)
	tr, ok := resp.(interface {
		kmsg.ThrottleResponse
		kmsg.SetThrottleResponse
	})
	if !whole || !ok {
		c.p.sh.m.throttleRewriteNo.Inc()
		return out
	}
	resp.SetVersion(p.version)
	if err := resp.ReadFrom(body[off:]); err != nil {
		c.p.sh.m.throttleRewriteNo.Inc()
		return out
	}
	if cur, _ := tr.Throttle(); cur >= ms {
		return out
	}
	tr.SetThrottle(ms)
	b := append(c.sh.throttleBuf[:0], 0, 0, 0, 0)
	b = append(b, body[:off]...)
	b = resp.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if cap(b) <= keepCompressionBytes {
		c.sh.throttleBuf = b
	}
	return b
}
