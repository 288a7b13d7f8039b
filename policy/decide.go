package policy

import "slices"

// Result is the outcome of a decision.
type Result uint8

// Results. WouldDeny is a denial the mode turns into a logged allow.
const (
	Allowed Result = iota
	Denied
	WouldDeny
)

// String returns allow, deny or would_deny: the values of the result label
// of pipemesh_policy_decisions_total.
func (r Result) String() string {
	switch r {
	case Denied:
		return "deny"
	case WouldDeny:
		return "would_deny"
	}
	return "allow"
}

// Reason says what made a decision.
type Reason uint8

// Reasons.
const (
	// ReasonAllowRule: an allow rule matched and no deny rule did.
	ReasonAllowRule Reason = iota
	// ReasonDenyRule: a deny rule matched (deny wins).
	ReasonDenyRule
	// ReasonSuperUser: the principal is a super user.
	ReasonSuperUser
	// ReasonNoACL: no rule names the resource and allow_if_no_acl is on.
	ReasonNoACL
	// ReasonNoAllow: no allow rule matched, so the default deny applied.
	ReasonNoAllow
)

// String describes the reason for logs and explain.
func (r Reason) String() string {
	switch r {
	case ReasonAllowRule:
		return "allow_rule"
	case ReasonDenyRule:
		return "deny_rule"
	case ReasonSuperUser:
		return "super_user"
	case ReasonNoACL:
		return "no_acl_allow"
	}
	return "no_matching_allow"
}

// Decision is the answer to one Decide call. It holds no allocation.
type Decision struct {
	Result Result
	Reason Reason
	// Rule is the rule that decided, nil for super users and defaults.
	Rule *Rule
}

// Allowed reports whether the request may proceed (allowed, or a denial
// the mode only audits).
func (d Decision) Allowed() bool { return d.Result != Denied }

// aces holds, per operation, the index+1 of the first rule of one principal
// on one resource pattern that allows or denies it (0: none). Audit deny
// rules are kept apart, so an enforced deny always wins over an audited one.
type aces struct {
	allow, deny, auditDeny [numOps]int32
}

// entry is every rule with one resource pattern (one literal name, the
// wildcard, or one prefix).
type entry struct {
	byPrincipal map[string]*aces
	anyone      *aces // User:*
}

// trieNode is a node of the prefix trie of one resource type's prefixed
// rules; entry is set where a prefix ends.
type trieNode struct {
	keys  []byte // sorted
	kids  []*trieNode
	entry *entry
}

func (n *trieNode) child(b byte) *trieNode {
	lo, hi := 0, len(n.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if n.keys[m] < b {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(n.keys) && n.keys[lo] == b {
		return n.kids[lo]
	}
	return nil
}

func (n *trieNode) insert(prefix string) *trieNode {
	for i := 0; i < len(prefix); i++ {
		b := prefix[i]
		c := n.child(b)
		if c == nil {
			c = &trieNode{}
			at, _ := slices.BinarySearch(n.keys, b)
			n.keys = slices.Insert(n.keys, at, b)
			n.kids = slices.Insert(n.kids, at, c)
		}
		n = c
	}
	return n
}

// index is the compiled rules of one resource type.
type index struct {
	literal  map[string]*entry
	wildcard *entry
	prefixes trieNode
	// anyAllow is, per principal (and "User:*"), the operations some allow
	// rule grants on some resource of the type, for Kafka's "allowed on any
	// resource of this type" checks (KIP-679).
	anyAllow map[string]uint16
}

// Policy is a compiled policy. It is immutable and safe for concurrent use;
// reload builds a new one.
type Policy struct {
	// File is where the policy was read from.
	File string
	// Mode is the policy-wide mode.
	Mode Mode
	// AllowIfNoACL mirrors Kafka's allow.everyone.if.no.acl.found.
	AllowIfNoACL bool
	// UnknownAPIs decides requests of API keys the proxy has no mapping
	// for, when the policy is enforced.
	UnknownAPIs Permission

	rules      []Rule
	superUsers map[string]struct{}
	creds      map[string]*Credentials
	idx        [numResourceTypes]index
	traffic    trafficRules

	flightQuotas    map[string]FlightQuota
	flightQuotaList []FlightQuota
}

// Rules returns the policy's rules in file order.
func (p *Policy) Rules() []Rule { return p.rules }

// SuperUsers returns the super users.
func (p *Policy) SuperUsers() []string {
	out := make([]string, 0, len(p.superUsers))
	for s := range p.superUsers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// HasPrincipals reports whether the policy defines principals with
// passwords, which turns SASL on and anonymous access off.
func (p *Policy) HasPrincipals() bool { return len(p.creds) > 0 }

// Credentials returns the credentials of the user name (without "User:").
func (p *Policy) Credentials(user string) (*Credentials, bool) {
	c, ok := p.creds[user]
	return c, ok
}

func compile(src source) (*Policy, error) {
	p := &Policy{
		Mode: src.mode, AllowIfNoACL: src.allowIfNoACL, UnknownAPIs: src.unknownAPIs,
		rules:      src.rules,
		traffic:    src.traffic,
		superUsers: make(map[string]struct{}, len(src.superUsers)),
		creds:      make(map[string]*Credentials, len(src.principals)),

		flightQuotas:    make(map[string]FlightQuota, len(src.flightQuotas)),
		flightQuotaList: src.flightQuotas,
	}
	for _, q := range src.flightQuotas {
		p.flightQuotas[q.Principal] = q
	}
	for _, s := range src.superUsers {
		p.superUsers[s] = struct{}{}
	}
	for _, ps := range src.principals {
		c, err := deriveCredentials(ps.name, ps.password)
		if err != nil {
			return nil, err
		}
		p.creds[ps.name] = c
	}
	for i := range p.idx {
		p.idx[i].literal = make(map[string]*entry)
		p.idx[i].anyAllow = make(map[string]uint16)
	}
	for i := range p.rules {
		r := &p.rules[i]
		r.text = r.format()
		ix := &p.idx[r.Resource]
		var e *entry
		switch {
		case r.Pattern == PatternLiteral && r.Name == Wildcard:
			if ix.wildcard == nil {
				ix.wildcard = &entry{}
			}
			e = ix.wildcard
		case r.Pattern == PatternLiteral:
			e = ix.literal[r.Name]
			if e == nil {
				e = &entry{}
				ix.literal[r.Name] = e
			}
		default:
			n := ix.prefixes.insert(r.Name)
			if n.entry == nil {
				n.entry = &entry{}
			}
			e = n.entry
		}
		var a *aces
		if r.Principal == "User:"+Wildcard {
			if e.anyone == nil {
				e.anyone = &aces{}
			}
			a = e.anyone
		} else {
			if e.byPrincipal == nil {
				e.byPrincipal = make(map[string]*aces)
			}
			a = e.byPrincipal[r.Principal]
			if a == nil {
				a = &aces{}
				e.byPrincipal[r.Principal] = a
			}
		}
		slot := &a.allow
		switch {
		case r.Permission == Allow:
			ix.anyAllow[r.Principal] |= 1 << r.Operation
		case p.ruleMode(r) == ModeAudit:
			slot = &a.auditDeny
		default:
			slot = &a.deny
		}
		if slot[r.Operation] == 0 {
			slot[r.Operation] = int32(i + 1)
		}
	}
	return p, nil
}

// ruleMode is the mode a deny rule runs in.
func (p *Policy) ruleMode(r *Rule) Mode {
	if r.Mode != ModeInherit {
		return r.Mode
	}
	return p.Mode
}

// scan gathers, over every entry matching a resource, the first deny,
// audited deny and allow rule for one principal and operation.
type scan struct {
	principal string
	op        Operation
	found     bool
	deny      int32
	auditDeny int32
	allow     int32
}

func first(cur, cand int32) int32 {
	if cand != 0 && (cur == 0 || cand < cur) {
		return cand
	}
	return cur
}

func (s *scan) visit(e *entry) {
	s.found = true
	if a, ok := e.byPrincipal[s.principal]; ok {
		s.visitAces(a)
	}
	if e.anyone != nil {
		s.visitAces(e.anyone)
	}
}

func (s *scan) visitAces(a *aces) {
	s.deny = first(s.deny, a.deny[s.op])
	s.deny = first(s.deny, a.deny[OpAll])
	s.auditDeny = first(s.auditDeny, a.auditDeny[s.op])
	s.auditDeny = first(s.auditDeny, a.auditDeny[OpAll])
	for _, o := range impliedBy[s.op] {
		s.allow = first(s.allow, a.allow[o])
	}
}

// Decide answers whether principal ("User:alice") may perform op on the
// resource of type rt named name, with Kafka's semantics: super users pass;
// an enforced deny rule wins; then an allow rule (or, with no rule on the
// resource at all, allow_if_no_acl) allows; otherwise the default deny. A
// denial in audit mode (the policy's, or the deny rule's own) comes back as
// WouldDeny. Decide does not allocate.
func (p *Policy) Decide(principal string, op Operation, rt ResourceType, name string) Decision {
	if _, ok := p.superUsers[principal]; ok {
		return Decision{Result: Allowed, Reason: ReasonSuperUser}
	}
	if rt >= numResourceTypes || op >= OpAll {
		return p.deny(Decision{Result: Denied, Reason: ReasonNoAllow})
	}
	ix := &p.idx[rt]
	s := scan{principal: principal, op: op}
	if e, ok := ix.literal[name]; ok {
		s.visit(e)
	}
	if ix.wildcard != nil {
		s.visit(ix.wildcard)
	}
	n := &ix.prefixes
	for i := 0; ; i++ {
		if n.entry != nil {
			s.visit(n.entry)
		}
		if i == len(name) {
			break
		}
		if n = n.child(name[i]); n == nil {
			break
		}
	}
	switch {
	case s.deny != 0:
		r := &p.rules[s.deny-1]
		d := Decision{Result: Denied, Reason: ReasonDenyRule, Rule: r}
		if p.ruleMode(r) == ModeAudit {
			d.Result = WouldDeny
		}
		return d
	case s.auditDeny != 0 && (s.allow != 0 || p.Mode == ModeAudit):
		// Name the deny rule that would decide once enforced. (With no
		// allow and an enforced policy, the default deny below decides.)
		return Decision{Result: WouldDeny, Reason: ReasonDenyRule, Rule: &p.rules[s.auditDeny-1]}
	case s.allow != 0:
		return Decision{Result: Allowed, Reason: ReasonAllowRule, Rule: &p.rules[s.allow-1]}
	case !s.found && p.AllowIfNoACL:
		return Decision{Result: Allowed, Reason: ReasonNoACL}
	}
	return p.deny(Decision{Result: Denied, Reason: ReasonNoAllow})
}

// deny applies the policy's mode to a default denial.
func (p *Policy) deny(d Decision) Decision {
	if p.Mode == ModeAudit {
		d.Result = WouldDeny
	}
	return d
}

// AllowedOnAny reports whether some allow rule grants principal op (or an
// operation implying it) on some resource of type rt, as Kafka asks for
// InitProducerId without a transactional id (WRITE on any topic stands in
// for IDEMPOTENT_WRITE, KIP-679). Super users always pass. Deny rules are not
// weighed here; each produce is still checked per topic.
func (p *Policy) AllowedOnAny(principal string, op Operation, rt ResourceType) bool {
	if _, ok := p.superUsers[principal]; ok {
		return true
	}
	if rt >= numResourceTypes || op >= numOps {
		return false
	}
	mask := p.idx[rt].anyAllow[principal] | p.idx[rt].anyAllow["User:"+Wildcard]
	for _, o := range impliedBy[op] {
		if mask&(1<<o) != 0 {
			return true
		}
	}
	return false
}

// IsSuperUser reports whether principal bypasses every rule.
func (p *Policy) IsSuperUser(principal string) bool {
	_, ok := p.superUsers[principal]
	return ok
}
