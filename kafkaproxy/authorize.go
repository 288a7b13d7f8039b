package kafkaproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// reasonAuthRefused closes a connection the policy cannot answer in Kafka's
// terms: a request before SASL authentication, a denied acks=0 produce, a
// failed SASL v0 exchange, or an API the policy denies with no error field.
const reasonAuthRefused = "auth_refused"

// Error codes the proxy answers with.
var (
	errTopicAuth   = kerr.TopicAuthorizationFailed.Code
	errGroupAuth   = kerr.GroupAuthorizationFailed.Code
	errClusterAuth = kerr.ClusterAuthorizationFailed.Code
	errTxnAuth     = kerr.TransactionalIDAuthorizationFailed.Code
	errNotTried    = kerr.OperationNotAttempted.Code
	errUnknownID   = kerr.UnknownTopicID.Code
)

// authzAfter is what the response to an authorized request needs: denied
// parts merged back in, or topics the principal may not see filtered out.
type authzAfter struct {
	apiVersions bool
	fix         func(kmsg.Response)
}

// policy returns the policy in force. Callers check cfg.Policy is set.
func (c *conn) policy() *policy.Policy { return c.p.cfg.Policy.Current() }

// authenticated reports whether the connection has an identity other than
// anonymous (SASL done, or a client certificate).
func (c *conn) authenticated() bool { return c.principal != policy.Anonymous }

// legacySaslHeader stands for a bare SASL token after SaslHandshake v0,
// which carries no request header.
var legacySaslHeader = protocol.RequestHeader{Key: keySaslAuthenticate, Version: -1}

// authorize is identity and authorization for one request while a policy is
// in force. It may answer the request itself (p.local), ask for the
// broker's answer to be fixed up (p.authz), or return a rewritten frame to
// forward instead of the client's (the allowed part of a mixed request). An
// error closes the connection. frame is the request without its size
// prefix, possibly only its head. held is memory taken from the budget for a
// request read whole to be decoded; the caller releases it once the frame
// is written. ok is false when the connection closed while waiting for it.
func (c *conn) authorize(hdr *protocol.RequestHeader, frame []byte, p *pending) (fwd []byte, held int64, ok bool, err error) {
	fwd, held, err = c.authorizeRequest(hdr, frame, p)
	if errors.Is(err, errClosedWaiting) {
		return nil, 0, false, nil
	}
	if err != nil || fwd == nil {
		// Answered here, refused, or forwarded as it streams: nothing of
		// a frame read whole is kept.
		c.p.sh.budget.requests.release(held)
		held = 0
	}
	return fwd, held, true, err
}

// errClosedWaiting is returned inside authorize when the connection closed
// while a request waited for memory to be read whole.
var errClosedWaiting = errors.New("connection closed while waiting for memory")

func (c *conn) authorizeRequest(hdr *protocol.RequestHeader, frame []byte, p *pending) (fwd []byte, held int64, err error) {
	pol := c.policy()
	if c.sasl.legacy && hdr.Version == -1 {
		out, err := c.saslLegacyToken(frame)
		if err != nil {
			return nil, 0, err
		}
		p.local = out
		return nil, 0, nil
	}
	switch hdr.Key {
	case protocol.ApiVersionsKey:
		if pol.HasPrincipals() {
			p.authz = &authzAfter{apiVersions: true}
		}
		return nil, 0, nil
	case keySaslHandshake, keySaslAuthenticate:
		if hdr.BodyOffset < 0 {
			return nil, 0, fmt.Errorf("%s v%d is newer than pipemesh supports", protocol.KeyName(hdr.Key), hdr.Version)
		}
		req, _, held, err := c.decodeRequest(hdr)
		if err != nil {
			return nil, held, err
		}
		var resp kmsg.Response
		if r, ok := req.(*kmsg.SASLHandshakeRequest); ok {
			resp = c.saslHandshake(r)
		} else {
			resp = c.saslAuthenticate(req.(*kmsg.SASLAuthenticateRequest))
		}
		p.local = localFrame(hdr, resp)
		c.p.m.localAnswers.Inc()
		return nil, held, nil
	}
	if pol.HasPrincipals() && !c.authenticated() {
		return nil, 0, fmt.Errorf("%s request before SASL authentication; the policy defines principals, so clients must authenticate "+
			"with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (or a client certificate)", protocol.KeyName(hdr.Key))
	}
	if pol.IsSuperUser(c.principal) {
		return nil, 0, nil
	}
	if hdr.BodyOffset < 0 {
		return nil, 0, fmt.Errorf("%s v%d is newer than pipemesh can authorize", protocol.KeyName(hdr.Key), hdr.Version)
	}
	a := authzRun{c: c, pol: pol, key: hdr.Key, principal: c.principal, clientID: c.clientID}
	if hdr.Key == protocol.ProduceKey && c.cr.Rest() > 0 && a.produceHeadAllowed(hdr, frame) {
		// Every topic is allowed: the batches stream through to the
		// broker as they arrive (cut-through), not read whole first.
		return nil, 0, nil
	}
	req, whole, held, err := c.decodeRequest(hdr)
	if err != nil {
		return nil, held, err
	}
	v := a.check(req)
	switch {
	case v.closeErr != nil:
		return nil, held, v.closeErr
	case v.deny:
		resp := req.ResponseKind()
		v.fix(resp)
		p.local = localFrame(hdr, resp)
		c.p.m.localAnswers.Inc()
		return nil, held, nil
	case v.fix != nil:
		p.authz = &authzAfter{fix: v.fix}
	}
	if !v.modified {
		return whole, held, nil
	}
	head := whole[4 : 4+hdr.BodyOffset]
	out := make([]byte, 4, len(whole))
	out = append(out, head...)
	out = req.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, held, nil
}

// decodeRequest reads the whole request (the head the loop read, and the
// rest of a large frame, with the memory for it taken from the budget
// first), returns it with its size prefix and the bytes held, and decodes it
// with kmsg.
func (c *conn) decodeRequest(hdr *protocol.RequestHeader) (kmsg.Request, []byte, int64, error) {
	_, held, ok, err := c.readWhole(c.cr.Frame()[4:])
	if !ok {
		return nil, nil, 0, errClosedWaiting
	}
	if err != nil {
		return nil, nil, held, fmt.Errorf("reading a %s request: %w", protocol.KeyName(hdr.Key), err)
	}
	raw := c.cr.Frame()
	req := kmsg.RequestForKey(hdr.Key)
	req.SetVersion(hdr.Version)
	if err := req.ReadFrom(raw[4+hdr.BodyOffset:]); err != nil {
		return nil, nil, held, fmt.Errorf("%w: decoding %s v%d: %w", protocol.ErrMalformed, protocol.KeyName(hdr.Key), hdr.Version, err)
	}
	return req, raw, held, nil
}

// produceHeadAllowed reports whether the head of a Produce request streamed
// past it names every topic of the request (and its transactional id), and
// the principal may WRITE all of them. Then nothing needs to be taken out
// and the request need not be read whole. Decisions are recorded (metric,
// audit log) only when all are allowed; otherwise the full check that
// follows records them.
func (a *authzRun) produceHeadAllowed(hdr *protocol.RequestHeader, frame []byte) bool {
	if hdr.Version < 3 {
		return false
	}
	body := frame[hdr.BodyOffset:]
	txn, ok := produceTransactionalID(hdr.Version, body)
	if !ok {
		return false
	}
	allowed := func(rt policy.ResourceType, name string) bool {
		return a.pol.Decide(a.principal, policy.OpWrite, rt, name).Allowed()
	}
	if txn != nil && !allowed(policy.ResTransactionalID, string(txn)) {
		return false
	}
	var names []string
	all := protocol.ProduceTopics(hdr.Version, body, func(topic []byte, id [16]byte) {
		if !ok {
			return
		}
		name := string(topic)
		if topic == nil {
			// Produce v13 names topics by id: only the cache is asked
			// here; a miss takes the full path, which refreshes it.
			if name, ok = a.c.p.topics.Name(id); !ok {
				return
			}
		}
		if ok = allowed(policy.ResTopic, name); ok {
			names = append(names, name)
		}
	})
	if !all || !ok {
		return false
	}
	if txn != nil {
		a.ok(policy.OpWrite, policy.ResTransactionalID, string(txn))
	}
	for _, n := range names {
		a.ok(policy.OpWrite, policy.ResTopic, n)
	}
	return true
}

// produceTransactionalID reads the transactional id at the start of a
// Produce request body (v3+): nil when there is none. ok is false when the
// body is too short to hold it.
func produceTransactionalID(version int16, body []byte) (id []byte, ok bool) {
	b := kbin.Reader{Src: body}
	if version >= 9 {
		id = b.CompactNullableBytes()
	} else if n := b.Int16(); n >= 0 {
		id = b.Span(int(n))
	}
	return id, b.Ok()
}

// localFrame encodes the proxy's own response to the request of hdr, with
// its size prefix and the response header its version needs.
func localFrame(hdr *protocol.RequestHeader, resp kmsg.Response) []byte {
	out := make([]byte, 4, 128)
	out = binary.BigEndian.AppendUint32(out, uint32(hdr.CorrelationID))
	if protocol.FlexibleResponseHeader(hdr.Key, hdr.Version) {
		out = append(out, 0) // no header tags
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

// authorizeResponse applies p.authz to the broker's response. body is the
// broker's frame without its size prefix, rewritten the address-rewritten
// frame (with prefix) or nil.
func (c *conn) authorizeResponse(p pending, body, rewritten []byte) ([]byte, error) {
	src := body
	if rewritten != nil {
		src = rewritten[4:]
	}
	flex := protocol.FlexibleResponseHeader(p.key, p.version)
	off, err := protocol.ResponseBodyOffset(src, flex)
	if err != nil {
		return nil, err
	}
	resp := kmsg.ResponseForKey(p.key)
	resp.SetVersion(p.version)
	if p.authz.apiVersions {
		if len(src) < off+2 || binary.BigEndian.Uint16(src[off:]) != 0 {
			return rewritten, nil // an error answer lists only ApiVersions
		}
	}
	if err := resp.ReadFrom(src[off:]); err != nil {
		return nil, fmt.Errorf("decoding to authorize: %w", err)
	}
	if p.authz.apiVersions {
		addSaslVersions(resp.(*kmsg.ApiVersionsResponse))
	} else {
		p.authz.fix(resp)
	}
	out := make([]byte, 4, len(src)+64)
	out = append(out, src[:off]...)
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, nil
}

// verdict is what one request's checks decided.
type verdict struct {
	// deny: answer here with an empty response that fix fills with errors.
	deny bool
	// modified: the request was changed (denied parts taken out, or an
	// option turned off) and is re-encoded.
	modified bool
	// fix completes the response: merges errors for denied parts, or
	// filters what the principal may not see.
	fix      func(kmsg.Response)
	closeErr error
}

// authzRun checks one request. It keeps the principal, client id and
// policy of the moment the request arrived: response fix-ups run on the
// response goroutine, after a re-authentication, reload or the first named
// client id (c.clientID, written by the request goroutine) may have moved on.
type authzRun struct {
	c         *conn
	pol       *policy.Policy
	key       int16
	principal string
	clientID  string
	// refreshed is set once an unknown topic id has cost a metadata
	// refresh: later unknown ids of the same request are looked up in the
	// cache only, so a request naming many made-up ids costs the cluster
	// one Metadata request, not one per id.
	refreshed bool
}

// ok decides one operation and records it (metric, audit log).
func (a *authzRun) ok(op policy.Operation, rt policy.ResourceType, name string) bool {
	d := a.pol.Decide(a.principal, op, rt, name)
	a.c.p.cfg.Policy.Count(d.Result)
	if d.Result != policy.Allowed || a.c.p.audit.allows {
		a.c.p.audit.record(a.c, a.principal, a.clientID, a.key, op, rt, name, d)
	}
	return d.Allowed()
}

// topic returns the error code for op on a topic named by name or by id
// (resolved through the proxy's topic id cache, refreshed at most once per
// request), 0 when allowed.
func (a *authzRun) topic(op policy.Operation, name string, id [16]byte) int16 {
	if name == "" && id != ([16]byte{}) {
		n, ok := a.c.p.topics.Name(id)
		if !ok {
			if a.refreshed {
				return errUnknownID
			}
			a.refreshed = true
			ctx, cancel := context.WithTimeout(a.c.p.ctx, 5*time.Second)
			var err error
			n, err = a.c.p.TopicName(ctx, id)
			cancel()
			if err != nil {
				return errUnknownID
			}
		}
		name = n
	}
	if a.ok(op, policy.ResTopic, name) {
		return 0
	}
	return errTopicAuth
}

// split keeps the elements of xs whose check returns 0 and returns the
// others with their codes. xs is filtered in place.
func split[T any](xs []T, check func(*T) int16) (kept, denied []T, codes []int16) {
	kept = xs[:0]
	for _, x := range xs {
		if code := check(&x); code != 0 {
			denied = append(denied, x)
			codes = append(codes, code)
			continue
		}
		kept = append(kept, x)
	}
	return kept, denied, codes
}

// partial turns a split into a verdict: nothing denied passes through,
// everything denied is answered here, a mix forwards the allowed part.
func partial(nKept, nDenied int, fix func(kmsg.Response)) verdict {
	switch {
	case nDenied == 0:
		return verdict{}
	case nKept == 0:
		return verdict{deny: true, fix: fix}
	}
	return verdict{modified: true, fix: fix}
}

func denyAll(fix func(kmsg.Response)) verdict { return verdict{deny: true, fix: fix} }

// check maps a request onto policy decisions, as Kafka's broker does
// (KafkaApis' authorize calls).
func (a *authzRun) check(req kmsg.Request) verdict {
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		return a.produce(r)
	case *kmsg.FetchRequest:
		return a.fetch(r)
	case *kmsg.MetadataRequest:
		return a.metadata(r)
	case *kmsg.ListOffsetsRequest:
		return a.listOffsets(r)
	case *kmsg.OffsetForLeaderEpochRequest:
		return a.offsetForLeaderEpoch(r)
	case *kmsg.FindCoordinatorRequest:
		return a.findCoordinator(r)
	case *kmsg.JoinGroupRequest:
		return a.group(policy.OpRead, r.Group, func(resp kmsg.Response) { resp.(*kmsg.JoinGroupResponse).ErrorCode = errGroupAuth })
	case *kmsg.SyncGroupRequest:
		return a.group(policy.OpRead, r.Group, func(resp kmsg.Response) { resp.(*kmsg.SyncGroupResponse).ErrorCode = errGroupAuth })
	case *kmsg.HeartbeatRequest:
		return a.group(policy.OpRead, r.Group, func(resp kmsg.Response) { resp.(*kmsg.HeartbeatResponse).ErrorCode = errGroupAuth })
	case *kmsg.LeaveGroupRequest:
		return a.group(policy.OpRead, r.Group, func(resp kmsg.Response) { resp.(*kmsg.LeaveGroupResponse).ErrorCode = errGroupAuth })
	case *kmsg.ConsumerGroupHeartbeatRequest:
		return a.group(policy.OpRead, r.Group, func(resp kmsg.Response) { resp.(*kmsg.ConsumerGroupHeartbeatResponse).ErrorCode = errGroupAuth })
	case *kmsg.OffsetDeleteRequest:
		return a.group(policy.OpDelete, r.Group, func(resp kmsg.Response) { resp.(*kmsg.OffsetDeleteResponse).ErrorCode = errGroupAuth })
	case *kmsg.OffsetCommitRequest:
		return a.offsetCommit(r)
	case *kmsg.OffsetFetchRequest:
		return a.offsetFetch(r)
	case *kmsg.DescribeGroupsRequest:
		return a.describeGroups(r)
	case *kmsg.ListGroupsRequest:
		return a.listGroups()
	case *kmsg.DeleteGroupsRequest:
		return a.deleteGroups(r)
	case *kmsg.CreateTopicsRequest:
		return a.createTopics(r)
	case *kmsg.DeleteTopicsRequest:
		return a.deleteTopics(r)
	case *kmsg.CreatePartitionsRequest:
		return a.createPartitions(r)
	case *kmsg.DeleteRecordsRequest:
		return a.deleteRecords(r)
	case *kmsg.DescribeConfigsRequest:
		return a.describeConfigs(r)
	case *kmsg.AlterConfigsRequest:
		return a.alterConfigs(r)
	case *kmsg.IncrementalAlterConfigsRequest:
		return a.incrementalAlterConfigs(r)
	case *kmsg.InitProducerIDRequest:
		return a.initProducerID(r)
	case *kmsg.AddPartitionsToTxnRequest:
		return a.addPartitionsToTxn(r)
	case *kmsg.AddOffsetsToTxnRequest:
		return a.addOffsetsToTxn(r)
	case *kmsg.EndTxnRequest:
		return a.txn(r.TransactionalID, func(resp kmsg.Response) { resp.(*kmsg.EndTxnResponse).ErrorCode = errTxnAuth })
	case *kmsg.TxnOffsetCommitRequest:
		return a.txnOffsetCommit(r)
	case *kmsg.DescribeACLsRequest:
		return a.cluster(policy.OpDescribe, func(resp kmsg.Response) { resp.(*kmsg.DescribeACLsResponse).ErrorCode = errClusterAuth })
	case *kmsg.CreateACLsRequest:
		n := len(r.Creations)
		return a.cluster(policy.OpAlter, func(resp kmsg.Response) {
			cr := resp.(*kmsg.CreateACLsResponse)
			for range n {
				res := kmsg.NewCreateACLsResponseResult()
				res.ErrorCode = errClusterAuth
				cr.Results = append(cr.Results, res)
			}
		})
	case *kmsg.DeleteACLsRequest:
		n := len(r.Filters)
		return a.cluster(policy.OpAlter, func(resp kmsg.Response) {
			dr := resp.(*kmsg.DeleteACLsResponse)
			for range n {
				res := kmsg.NewDeleteACLsResponseResult()
				res.ErrorCode = errClusterAuth
				dr.Results = append(dr.Results, res)
			}
		})
	case *kmsg.DescribeTopicPartitionsRequest:
		return a.describeTopicPartitions(r)
	case *kmsg.DescribeProducersRequest:
		return a.describeProducers(r)
	case *kmsg.DescribeTransactionsRequest:
		return a.describeTransactions(r)
	case *kmsg.ListTransactionsRequest:
		return a.listTransactions()
	case *kmsg.DescribeLogDirsRequest:
		return a.cluster(policy.OpDescribe, func(resp kmsg.Response) { resp.(*kmsg.DescribeLogDirsResponse).ErrorCode = errClusterAuth })
	case *kmsg.DescribeClientQuotasRequest:
		return a.cluster(policy.OpDescribeConfigs, func(resp kmsg.Response) { resp.(*kmsg.DescribeClientQuotasResponse).ErrorCode = errClusterAuth })
	case *kmsg.DescribeUserSCRAMCredentialsRequest:
		return a.cluster(policy.OpDescribe, func(resp kmsg.Response) {
			resp.(*kmsg.DescribeUserSCRAMCredentialsResponse).ErrorCode = errClusterAuth
		})
	case *kmsg.ListPartitionReassignmentsRequest:
		return a.cluster(policy.OpDescribe, func(resp kmsg.Response) { resp.(*kmsg.ListPartitionReassignmentsResponse).ErrorCode = errClusterAuth })
	case *kmsg.AlterPartitionAssignmentsRequest:
		return a.cluster(policy.OpAlter, func(resp kmsg.Response) { resp.(*kmsg.AlterPartitionAssignmentsResponse).ErrorCode = errClusterAuth })
	case *kmsg.ElectLeadersRequest:
		return a.cluster(policy.OpAlter, func(resp kmsg.Response) { resp.(*kmsg.ElectLeadersResponse).ErrorCode = errClusterAuth })
	case *kmsg.AlterUserSCRAMCredentialsRequest:
		users := make([]string, 0, len(r.Deletions)+len(r.Upsertions))
		for _, d := range r.Deletions {
			users = append(users, d.Name)
		}
		for _, u := range r.Upsertions {
			users = append(users, u.Name)
		}
		return a.cluster(policy.OpAlter, func(resp kmsg.Response) {
			ar := resp.(*kmsg.AlterUserSCRAMCredentialsResponse)
			for _, u := range users {
				res := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
				res.User, res.ErrorCode = u, errClusterAuth
				ar.Results = append(ar.Results, res)
			}
		})
	case *kmsg.DescribeClusterRequest, *kmsg.GetTelemetrySubscriptionsRequest, *kmsg.PushTelemetryRequest:
		// Brokers only, or client telemetry (KIP-714): Kafka requires no
		// ACL for these beyond being authenticated.
		return verdict{}
	}
	// An API with no mapping: the policy's unknown_apis decides. The
	// protocol has no generic error answer, so a denial closes.
	d := policy.Decision{Result: policy.Allowed}
	if a.pol.UnknownAPIs == policy.Deny {
		d.Result, d.Reason = policy.Denied, policy.ReasonNoAllow
		if a.pol.Mode == policy.ModeAudit {
			d.Result = policy.WouldDeny
		}
	}
	a.c.p.cfg.Policy.Count(d.Result)
	if d.Result != policy.Allowed {
		a.c.p.audit.record(a.c, a.principal, a.clientID, a.key, policy.OpAll, policy.ResCluster, policy.ClusterName, d)
	}
	if d.Allowed() {
		return verdict{}
	}
	return verdict{closeErr: fmt.Errorf("%s is not mapped to ACLs by pipemesh and the policy denies unknown APIs (unknown_apis: deny); "+
		"set unknown_apis: allow to let it through", protocol.KeyName(a.key))}
}

func (a *authzRun) produce(r *kmsg.ProduceRequest) verdict {
	txnDenied := r.TransactionID != nil && !a.ok(policy.OpWrite, policy.ResTransactionalID, *r.TransactionID)
	kept, denied, codes := split(r.Topics, func(t *kmsg.ProduceRequestTopic) int16 {
		if txnDenied {
			return errTxnAuth
		}
		return a.topic(policy.OpWrite, t.Topic, t.TopicID)
	})
	if len(denied) > 0 && r.Acks == 0 {
		return verdict{closeErr: errors.New("acks=0 produce denied by the policy; the protocol has no answer for acks=0, so the connection is closed")}
	}
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		pr := resp.(*kmsg.ProduceResponse)
		for i, t := range denied {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			pr.Topics = append(pr.Topics, rt)
		}
	})
}

func (a *authzRun) fetch(r *kmsg.FetchRequest) verdict {
	if r.ReplicaID >= 0 || r.ReplicaState.ID >= 0 {
		return a.cluster(policy.OpClusterAction, func(resp kmsg.Response) { resp.(*kmsg.FetchResponse).ErrorCode = errClusterAuth })
	}
	// Fetch sessions (KIP-227) let a client fetch partitions it named
	// once without naming them again, which would outlive a reload that
	// revokes READ. Under a policy every fetch is a full, sessionless one,
	// so every partition is checked on every request.
	modified := false
	if r.SessionID != 0 || r.SessionEpoch != -1 || len(r.ForgottenTopics) > 0 {
		r.SessionID, r.SessionEpoch, r.ForgottenTopics = 0, -1, nil
		modified = true
	}
	kept, denied, codes := split(r.Topics, func(t *kmsg.FetchRequestTopic) int16 {
		return a.topic(policy.OpRead, t.Topic, t.TopicID)
	})
	r.Topics = kept
	v := partial(len(kept), len(denied), func(resp kmsg.Response) {
		fr := resp.(*kmsg.FetchResponse)
		for i, t := range denied {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			fr.Topics = append(fr.Topics, rt)
		}
	})
	v.modified = v.modified || (modified && !v.deny)
	return v
}

func (a *authzRun) metadata(r *kmsg.MetadataRequest) verdict {
	explicit := r.Topics != nil
	modified := false
	if r.AllowAutoTopicCreation && explicit {
		clusterCreate := a.ok(policy.OpCreate, policy.ResCluster, policy.ClusterName)
		for _, t := range r.Topics {
			if !clusterCreate && t.Topic != nil && !a.ok(policy.OpCreate, policy.ResTopic, *t.Topic) {
				// Auto-creation needs CREATE; without it the broker
				// answers UNKNOWN_TOPIC_OR_PARTITION, as Kafka would.
				r.AllowAutoTopicCreation = false
				modified = true
				break
			}
		}
	}
	return verdict{modified: modified, fix: func(resp kmsg.Response) {
		mr := resp.(*kmsg.MetadataResponse)
		keep := mr.Topics[:0]
		for _, t := range mr.Topics {
			name := ""
			if t.Topic != nil {
				name = *t.Topic
			}
			if a.ok(policy.OpDescribe, policy.ResTopic, name) {
				keep = append(keep, t)
				continue
			}
			if explicit {
				// Named by the client: say it is not allowed, and
				// show nothing else of it.
				t.ErrorCode, t.Partitions, t.TopicID, t.IsInternal = errTopicAuth, nil, [16]byte{}, false
				keep = append(keep, t)
			}
		}
		mr.Topics = keep
	}}
}

func (a *authzRun) listOffsets(r *kmsg.ListOffsetsRequest) verdict {
	kept, denied, codes := split(r.Topics, func(t *kmsg.ListOffsetsRequestTopic) int16 {
		return a.topic(policy.OpDescribe, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		lr := resp.(*kmsg.ListOffsetsResponse)
		for i, t := range denied {
			rt := kmsg.NewListOffsetsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewListOffsetsResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			lr.Topics = append(lr.Topics, rt)
		}
	})
}

func (a *authzRun) offsetForLeaderEpoch(r *kmsg.OffsetForLeaderEpochRequest) verdict {
	kept, denied, codes := split(r.Topics, func(t *kmsg.OffsetForLeaderEpochRequestTopic) int16 {
		return a.topic(policy.OpDescribe, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		or := resp.(*kmsg.OffsetForLeaderEpochResponse)
		for i, t := range denied {
			rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			or.Topics = append(or.Topics, rt)
		}
	})
}

// coordinatorCheck decides a FindCoordinator key by its type: DESCRIBE on
// the group or the transactional id (share groups are groups).
func (a *authzRun) coordinatorCheck(typ int8, key string) int16 {
	switch typ {
	case 1:
		if !a.ok(policy.OpDescribe, policy.ResTransactionalID, key) {
			return errTxnAuth
		}
	default:
		if !a.ok(policy.OpDescribe, policy.ResGroup, key) {
			return errGroupAuth
		}
	}
	return 0
}

func (a *authzRun) findCoordinator(r *kmsg.FindCoordinatorRequest) verdict {
	if r.Version < 4 {
		code := a.coordinatorCheck(r.CoordinatorType, r.CoordinatorKey)
		if code == 0 {
			return verdict{}
		}
		return denyAll(func(resp kmsg.Response) {
			fr := resp.(*kmsg.FindCoordinatorResponse)
			fr.ErrorCode, fr.NodeID = code, -1
		})
	}
	var denied []string
	var codes []int16
	kept := r.CoordinatorKeys[:0]
	for _, k := range r.CoordinatorKeys {
		if code := a.coordinatorCheck(r.CoordinatorType, k); code != 0 {
			denied, codes = append(denied, k), append(codes, code)
			continue
		}
		kept = append(kept, k)
	}
	r.CoordinatorKeys = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		fr := resp.(*kmsg.FindCoordinatorResponse)
		for i, k := range denied {
			co := kmsg.NewFindCoordinatorResponseCoordinator()
			co.Key, co.NodeID, co.ErrorCode = k, -1, codes[i]
			fr.Coordinators = append(fr.Coordinators, co)
		}
	})
}

// group checks one operation on a group named in a request whose response
// has one error code.
func (a *authzRun) group(op policy.Operation, group string, fix func(kmsg.Response)) verdict {
	if a.ok(op, policy.ResGroup, group) {
		return verdict{}
	}
	return denyAll(fix)
}

func (a *authzRun) txn(id string, fix func(kmsg.Response)) verdict {
	if a.ok(policy.OpWrite, policy.ResTransactionalID, id) {
		return verdict{}
	}
	return denyAll(fix)
}

func (a *authzRun) cluster(op policy.Operation, fix func(kmsg.Response)) verdict {
	if a.ok(op, policy.ResCluster, policy.ClusterName) {
		return verdict{}
	}
	return denyAll(fix)
}

func (a *authzRun) offsetCommit(r *kmsg.OffsetCommitRequest) verdict {
	groupDenied := !a.ok(policy.OpRead, policy.ResGroup, r.Group)
	kept, denied, codes := split(r.Topics, func(t *kmsg.OffsetCommitRequestTopic) int16 {
		if groupDenied {
			return errGroupAuth
		}
		return a.topic(policy.OpRead, t.Topic, t.TopicID)
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		or := resp.(*kmsg.OffsetCommitResponse)
		for i, t := range denied {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			or.Topics = append(or.Topics, rt)
		}
	})
}

func (a *authzRun) offsetFetch(r *kmsg.OffsetFetchRequest) verdict {
	// Topics the principal may not DESCRIBE are taken out of the answer
	// (or marked, when the client named them), as Kafka does.
	filterGroupTopics := func(topics []kmsg.OffsetFetchResponseGroupTopic, explicit bool) []kmsg.OffsetFetchResponseGroupTopic {
		keep := topics[:0]
		for _, t := range topics {
			if a.topic(policy.OpDescribe, t.Topic, t.TopicID) == 0 {
				keep = append(keep, t)
			} else if explicit {
				for i := range t.Partitions {
					t.Partitions[i].ErrorCode, t.Partitions[i].Offset = errTopicAuth, -1
				}
				keep = append(keep, t)
			}
		}
		return keep
	}
	if r.Version < 8 {
		if !a.ok(policy.OpDescribe, policy.ResGroup, r.Group) {
			topics := r.Topics
			return denyAll(func(resp kmsg.Response) {
				or := resp.(*kmsg.OffsetFetchResponse)
				or.ErrorCode = errGroupAuth
				for _, t := range topics {
					rt := kmsg.NewOffsetFetchResponseTopic()
					rt.Topic = t.Topic
					for _, p := range t.Partitions {
						rp := kmsg.NewOffsetFetchResponseTopicPartition()
						rp.Partition, rp.ErrorCode, rp.Offset = p, errGroupAuth, -1
						rt.Partitions = append(rt.Partitions, rp)
					}
					or.Topics = append(or.Topics, rt)
				}
			})
		}
		explicit := r.Topics != nil
		return verdict{fix: func(resp kmsg.Response) {
			or := resp.(*kmsg.OffsetFetchResponse)
			keep := or.Topics[:0]
			for _, t := range or.Topics {
				if a.topic(policy.OpDescribe, t.Topic, [16]byte{}) == 0 {
					keep = append(keep, t)
				} else if explicit {
					for i := range t.Partitions {
						t.Partitions[i].ErrorCode, t.Partitions[i].Offset = errTopicAuth, -1
					}
					keep = append(keep, t)
				}
			}
			or.Topics = keep
		}}
	}
	kept, denied, _ := split(r.Groups, func(g *kmsg.OffsetFetchRequestGroup) int16 {
		if a.ok(policy.OpDescribe, policy.ResGroup, g.Group) {
			return 0
		}
		return errGroupAuth
	})
	r.Groups = kept
	explicit := map[string]bool{}
	for _, g := range kept {
		explicit[g.Group] = g.Topics != nil
	}
	v := partial(len(kept), len(denied), nil)
	v.fix = func(resp kmsg.Response) {
		or := resp.(*kmsg.OffsetFetchResponse)
		for i := range or.Groups {
			or.Groups[i].Topics = filterGroupTopics(or.Groups[i].Topics, explicit[or.Groups[i].Group])
		}
		for _, g := range denied {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, errGroupAuth
			or.Groups = append(or.Groups, rg)
		}
	}
	return v
}

func (a *authzRun) describeGroups(r *kmsg.DescribeGroupsRequest) verdict {
	kept, denied, _ := split(r.Groups, func(g *string) int16 {
		if a.ok(policy.OpDescribe, policy.ResGroup, *g) {
			return 0
		}
		return errGroupAuth
	})
	r.Groups = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DescribeGroupsResponse)
		for _, g := range denied {
			rg := kmsg.NewDescribeGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, errGroupAuth
			dr.Groups = append(dr.Groups, rg)
		}
	})
}

// listGroups shows every group to a principal with DESCRIBE on the
// cluster and otherwise only the groups it may DESCRIBE, as Kafka does.
func (a *authzRun) listGroups() verdict {
	if a.ok(policy.OpDescribe, policy.ResCluster, policy.ClusterName) {
		return verdict{}
	}
	return verdict{fix: func(resp kmsg.Response) {
		lr := resp.(*kmsg.ListGroupsResponse)
		keep := lr.Groups[:0]
		for _, g := range lr.Groups {
			if a.ok(policy.OpDescribe, policy.ResGroup, g.Group) {
				keep = append(keep, g)
			}
		}
		lr.Groups = keep
	}}
}

func (a *authzRun) deleteGroups(r *kmsg.DeleteGroupsRequest) verdict {
	kept, denied, _ := split(r.Groups, func(g *string) int16 {
		if a.ok(policy.OpDelete, policy.ResGroup, *g) {
			return 0
		}
		return errGroupAuth
	})
	r.Groups = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DeleteGroupsResponse)
		for _, g := range denied {
			rg := kmsg.NewDeleteGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, errGroupAuth
			dr.Groups = append(dr.Groups, rg)
		}
	})
}

func (a *authzRun) createTopics(r *kmsg.CreateTopicsRequest) verdict {
	clusterCreate := a.ok(policy.OpCreate, policy.ResCluster, policy.ClusterName)
	kept, denied, _ := split(r.Topics, func(t *kmsg.CreateTopicsRequestTopic) int16 {
		if clusterCreate || a.ok(policy.OpCreate, policy.ResTopic, t.Topic) {
			return 0
		}
		return errTopicAuth
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		cr := resp.(*kmsg.CreateTopicsResponse)
		for _, t := range denied {
			rt := kmsg.NewCreateTopicsResponseTopic()
			rt.Topic, rt.ErrorCode = t.Topic, errTopicAuth
			cr.Topics = append(cr.Topics, rt)
		}
	})
}

func (a *authzRun) deleteTopics(r *kmsg.DeleteTopicsRequest) verdict {
	if r.Version < 6 {
		kept, denied, _ := split(r.TopicNames, func(t *string) int16 { return a.topic(policy.OpDelete, *t, [16]byte{}) })
		r.TopicNames = kept
		return partial(len(kept), len(denied), func(resp kmsg.Response) {
			dr := resp.(*kmsg.DeleteTopicsResponse)
			for _, t := range denied {
				rt := kmsg.NewDeleteTopicsResponseTopic()
				rt.Topic, rt.ErrorCode = &t, errTopicAuth
				dr.Topics = append(dr.Topics, rt)
			}
		})
	}
	kept, denied, codes := split(r.Topics, func(t *kmsg.DeleteTopicsRequestTopic) int16 {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		return a.topic(policy.OpDelete, name, t.TopicID)
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DeleteTopicsResponse)
		for i, t := range denied {
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic, rt.TopicID, rt.ErrorCode = t.Topic, t.TopicID, codes[i]
			dr.Topics = append(dr.Topics, rt)
		}
	})
}

func (a *authzRun) createPartitions(r *kmsg.CreatePartitionsRequest) verdict {
	kept, denied, _ := split(r.Topics, func(t *kmsg.CreatePartitionsRequestTopic) int16 {
		return a.topic(policy.OpAlter, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		cr := resp.(*kmsg.CreatePartitionsResponse)
		for _, t := range denied {
			rt := kmsg.NewCreatePartitionsResponseTopic()
			rt.Topic, rt.ErrorCode = t.Topic, errTopicAuth
			cr.Topics = append(cr.Topics, rt)
		}
	})
}

func (a *authzRun) deleteRecords(r *kmsg.DeleteRecordsRequest) verdict {
	kept, denied, _ := split(r.Topics, func(t *kmsg.DeleteRecordsRequestTopic) int16 {
		return a.topic(policy.OpDelete, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DeleteRecordsResponse)
		for _, t := range denied {
			rt := kmsg.NewDeleteRecordsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDeleteRecordsResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.LowWatermark = p.Partition, errTopicAuth, -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			dr.Topics = append(dr.Topics, rt)
		}
	})
}

// configCheck decides op on a config resource: topics by name, brokers and
// broker loggers as the cluster, groups by name.
func (a *authzRun) configCheck(op policy.Operation, typ kmsg.ConfigResourceType, name string) int16 {
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
		return a.topic(op, name, [16]byte{})
	case kmsg.ConfigResourceTypeGroupConfig:
		if a.ok(op, policy.ResGroup, name) {
			return 0
		}
		return errGroupAuth
	default:
		if a.ok(op, policy.ResCluster, policy.ClusterName) {
			return 0
		}
		return errClusterAuth
	}
}

func (a *authzRun) describeConfigs(r *kmsg.DescribeConfigsRequest) verdict {
	kept, denied, codes := split(r.Resources, func(x *kmsg.DescribeConfigsRequestResource) int16 {
		return a.configCheck(policy.OpDescribeConfigs, x.ResourceType, x.ResourceName)
	})
	r.Resources = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DescribeConfigsResponse)
		for i, x := range denied {
			rr := kmsg.NewDescribeConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode = x.ResourceType, x.ResourceName, codes[i]
			dr.Resources = append(dr.Resources, rr)
		}
	})
}

func (a *authzRun) alterConfigs(r *kmsg.AlterConfigsRequest) verdict {
	kept, denied, codes := split(r.Resources, func(x *kmsg.AlterConfigsRequestResource) int16 {
		return a.configCheck(policy.OpAlterConfigs, x.ResourceType, x.ResourceName)
	})
	r.Resources = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		ar := resp.(*kmsg.AlterConfigsResponse)
		for i, x := range denied {
			rr := kmsg.NewAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode = x.ResourceType, x.ResourceName, codes[i]
			ar.Resources = append(ar.Resources, rr)
		}
	})
}

func (a *authzRun) incrementalAlterConfigs(r *kmsg.IncrementalAlterConfigsRequest) verdict {
	kept, denied, codes := split(r.Resources, func(x *kmsg.IncrementalAlterConfigsRequestResource) int16 {
		return a.configCheck(policy.OpAlterConfigs, x.ResourceType, x.ResourceName)
	})
	r.Resources = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		ar := resp.(*kmsg.IncrementalAlterConfigsResponse)
		for i, x := range denied {
			rr := kmsg.NewIncrementalAlterConfigsResponseResource()
			rr.ResourceType, rr.ResourceName, rr.ErrorCode = x.ResourceType, x.ResourceName, codes[i]
			ar.Resources = append(ar.Resources, rr)
		}
	})
}

// initProducerID needs WRITE on the transactional id, or for an idempotent
// producer IDEMPOTENT_WRITE on the cluster or WRITE on any topic (KIP-679).
func (a *authzRun) initProducerID(r *kmsg.InitProducerIDRequest) verdict {
	if r.TransactionalID != nil {
		return a.txn(*r.TransactionalID, func(resp kmsg.Response) { resp.(*kmsg.InitProducerIDResponse).ErrorCode = errTxnAuth })
	}
	if a.pol.AllowedOnAny(a.principal, policy.OpWrite, policy.ResTopic) {
		a.c.p.cfg.Policy.Count(policy.Allowed)
		return verdict{}
	}
	return a.cluster(policy.OpIdempotentWrite, func(resp kmsg.Response) { resp.(*kmsg.InitProducerIDResponse).ErrorCode = errClusterAuth })
}

func (a *authzRun) addPartitionsToTxn(r *kmsg.AddPartitionsToTxnRequest) verdict {
	if r.Version >= 4 { // broker to broker (KIP-890)
		return a.cluster(policy.OpClusterAction, func(resp kmsg.Response) { resp.(*kmsg.AddPartitionsToTxnResponse).ErrorCode = errClusterAuth })
	}
	txnDenied := !a.ok(policy.OpWrite, policy.ResTransactionalID, r.TransactionalID)
	codes := make([]int16, len(r.Topics))
	any := false
	for i, t := range r.Topics {
		switch {
		case txnDenied:
			codes[i] = errTxnAuth
		default:
			codes[i] = a.topic(policy.OpWrite, t.Topic, [16]byte{})
		}
		any = any || codes[i] != 0
	}
	if !any {
		return verdict{}
	}
	// Kafka answers such a request whole: the denied partitions with the
	// authorization error, the rest OPERATION_NOT_ATTEMPTED.
	topics := r.Topics
	return denyAll(func(resp kmsg.Response) {
		ar := resp.(*kmsg.AddPartitionsToTxnResponse)
		for i, t := range topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			code := codes[i]
			if code == 0 {
				code = errNotTried
			}
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			ar.Topics = append(ar.Topics, rt)
		}
	})
}

func (a *authzRun) addOffsetsToTxn(r *kmsg.AddOffsetsToTxnRequest) verdict {
	code := int16(0)
	switch {
	case !a.ok(policy.OpWrite, policy.ResTransactionalID, r.TransactionalID):
		code = errTxnAuth
	case !a.ok(policy.OpRead, policy.ResGroup, r.Group):
		code = errGroupAuth
	default:
		return verdict{}
	}
	return denyAll(func(resp kmsg.Response) { resp.(*kmsg.AddOffsetsToTxnResponse).ErrorCode = code })
}

func (a *authzRun) txnOffsetCommit(r *kmsg.TxnOffsetCommitRequest) verdict {
	whole := int16(0)
	switch {
	case !a.ok(policy.OpWrite, policy.ResTransactionalID, r.TransactionalID):
		whole = errTxnAuth
	case !a.ok(policy.OpRead, policy.ResGroup, r.Group):
		whole = errGroupAuth
	}
	kept, denied, codes := split(r.Topics, func(t *kmsg.TxnOffsetCommitRequestTopic) int16 {
		if whole != 0 {
			return whole
		}
		return a.topic(policy.OpRead, t.Topic, t.TopicID)
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		tr := resp.(*kmsg.TxnOffsetCommitResponse)
		for i, t := range denied {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codes[i]
				rt.Partitions = append(rt.Partitions, rp)
			}
			tr.Topics = append(tr.Topics, rt)
		}
	})
}

// describeTopicPartitions (KIP-966, what newer admin clients use instead
// of Metadata) needs DESCRIBE on each topic.
func (a *authzRun) describeTopicPartitions(r *kmsg.DescribeTopicPartitionsRequest) verdict {
	kept, denied, _ := split(r.Topics, func(t *kmsg.DescribeTopicPartitionsRequestTopic) int16 {
		return a.topic(policy.OpDescribe, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DescribeTopicPartitionsResponse)
		for _, t := range denied {
			rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
			rt.Topic, rt.ErrorCode = kmsg.StringPtr(t.Topic), errTopicAuth
			dr.Topics = append(dr.Topics, rt)
		}
	})
}

// describeProducers needs READ on each topic, as Kafka's broker asks.
func (a *authzRun) describeProducers(r *kmsg.DescribeProducersRequest) verdict {
	kept, denied, _ := split(r.Topics, func(t *kmsg.DescribeProducersRequestTopic) int16 {
		return a.topic(policy.OpRead, t.Topic, [16]byte{})
	})
	r.Topics = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DescribeProducersResponse)
		for _, t := range denied {
			rt := kmsg.NewDescribeProducersResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDescribeProducersResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, errTopicAuth
				rt.Partitions = append(rt.Partitions, rp)
			}
			dr.Topics = append(dr.Topics, rt)
		}
	})
}

// describeTransactions needs DESCRIBE on each transactional id.
func (a *authzRun) describeTransactions(r *kmsg.DescribeTransactionsRequest) verdict {
	kept, denied, _ := split(r.TransactionalIDs, func(id *string) int16 {
		if a.ok(policy.OpDescribe, policy.ResTransactionalID, *id) {
			return 0
		}
		return errTxnAuth
	})
	r.TransactionalIDs = kept
	return partial(len(kept), len(denied), func(resp kmsg.Response) {
		dr := resp.(*kmsg.DescribeTransactionsResponse)
		for _, id := range denied {
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID, st.ErrorCode = id, errTxnAuth
			dr.TransactionStates = append(dr.TransactionStates, st)
		}
	})
}

// listTransactions shows only the transactional ids the principal may
// DESCRIBE, as Kafka does.
func (a *authzRun) listTransactions() verdict {
	return verdict{fix: func(resp kmsg.Response) {
		lr := resp.(*kmsg.ListTransactionsResponse)
		keep := lr.TransactionStates[:0]
		for _, st := range lr.TransactionStates {
			if a.ok(policy.OpDescribe, policy.ResTransactionalID, st.TransactionalID) {
				keep = append(keep, st)
			}
		}
		lr.TransactionStates = keep
	}}
}
