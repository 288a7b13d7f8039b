package policy

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Pos is a place in a policy file, 1-based.
type Pos struct{ Line, Col int }

// Issue is one problem found in a policy file.
type Issue struct {
	Pos
	Msg string
}

// Error lists every problem found in one policy file, in file order, so
// that `pipemesh policy check` can show them all at once.
type Error struct {
	File   string
	Issues []Issue
}

// Error prints one `file:line:col: what is wrong` line per issue.
func (e *Error) Error() string {
	var b strings.Builder
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s:%d:%d: %s", e.File, is.Line, is.Col, is.Msg)
	}
	return b.String()
}

// Rule is one ACL binding of the policy file.
type Rule struct {
	// Index is the rule's place in the acls list, from 0.
	Index      int
	Pos        Pos
	Principal  string // "User:alice" or "User:*"
	Operation  Operation
	Resource   ResourceType
	Name       string
	Pattern    PatternType
	Permission Permission
	// Mode is the rule's own mode (deny rules only); ModeInherit takes the
	// policy's.
	Mode Mode

	text string // String, kept at compile so that callers on hot paths do not allocate
}

// String describes the rule the way kafka-acls.sh --list does, with its
// place in the file.
func (r *Rule) String() string {
	if r.text != "" {
		return r.text
	}
	return r.format()
}

func (r *Rule) format() string {
	s := fmt.Sprintf("acls[%d] at line %d: %s %s %s on %s %s:%q", r.Index, r.Pos.Line, r.Permission, r.Principal,
		r.Operation, r.Resource, r.Pattern, r.Name)
	if r.Mode != ModeInherit {
		s += " (mode " + r.Mode.String() + ")"
	}
	return s
}

// principalSpec is a principal entry before its credentials are derived.
type principalSpec struct {
	name     string
	pos      Pos
	password string
}

// source is a parsed, validated policy file before compilation.
type source struct {
	mode         Mode
	allowIfNoACL bool
	unknownAPIs  Permission
	superUsers   []string
	principals   []principalSpec
	rules        []Rule
	flightQuotas []FlightQuota
	traffic      trafficRules // compression: and quotas: (rules.go)
}

// Options are what parsing takes from the environment. Zero values use the
// process's.
type Options struct {
	// Getenv looks up password_env variables. Default os.LookupEnv.
	Getenv func(string) (string, bool)
	// RulesIn names a config file that sets compression: or quotas:
	// already; the policy may then not (rules come from one file).
	RulesIn string
}

// Load reads and compiles the policy file at path.
func Load(path string, opts Options) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse validates and compiles a policy, naming it file in errors. Every
// problem found is reported, as an *Error.
func Parse(file string, data []byte, opts Options) (*Policy, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.LookupEnv
	}
	p := parser{getenv: opts.Getenv, rulesIn: opts.RulesIn}
	src := p.parse(data)
	if len(p.issues) > 0 {
		slices.SortStableFunc(p.issues, func(a, b Issue) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			return a.Col - b.Col
		})
		return nil, &Error{File: file, Issues: p.issues}
	}
	pol, err := compile(src)
	if err != nil {
		return nil, fmt.Errorf("policy: compiling %s: %w", file, err)
	}
	pol.File = file
	return pol, nil
}

type parser struct {
	getenv  func(string) (string, bool)
	rulesIn string
	issues  []Issue
}

func (p *parser) add(n *yaml.Node, format string, args ...any) {
	pos := Pos{1, 1}
	if n != nil {
		pos = Pos{n.Line, n.Column}
	}
	p.issues = append(p.issues, Issue{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// yamlLine finds the line yaml.v3 names in its syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) parse(data []byte) source {
	src := source{mode: ModeEnforce, unknownAPIs: Deny}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		msg := err.Error()
		line := 1
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		} else if !errors.As(err, &te) {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		p.issues = append(p.issues, Issue{Pos: Pos{line, 1}, Msg: "not valid YAML: " + msg})
		return src
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.add(nil, "the file is empty; a policy needs at least an acls list (see docs/security.md)")
		return src
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.add(root, "the policy must be a mapping with keys mode, super_users, principals, acls, flight_quotas")
		return src
	}
	p.mapping(root, "policy", func(key string, k, v *yaml.Node) bool {
		switch key {
		case "mode":
			if m, ok := p.mode(v, false); ok {
				src.mode = m
			}
		case "allow_if_no_acl":
			src.allowIfNoACL = p.boolean(v, key)
		case "unknown_apis":
			switch s := p.str(v, key); strings.ToLower(s) {
			case "allow":
				src.unknownAPIs = Allow
			case "deny":
				src.unknownAPIs = Deny
			case "":
			default:
				p.add(v, "unknown_apis %q: want allow or deny", s)
			}
		case "super_users":
			p.seq(v, key, func(n *yaml.Node) {
				if s := p.str(n, "super_users entry"); s != "" {
					if err := checkPrincipal(s, false); err != "" {
						p.add(n, "super_users entry %q: %s", s, err)
						return
					}
					src.superUsers = append(src.superUsers, s)
				}
			})
		case "principals":
			src.principals = p.principals(v)
		case "acls":
			src.rules = p.rules(v)
		case "flight_quotas":
			src.flightQuotas = p.flightQuotas(v)
		case "compression", "quotas":
			p.trafficSection(key, k, v, &src.traffic)
		default:
			return false
		}
		return true
	})
	if len(src.rules) == 0 && len(src.principals) == 0 && !src.allowIfNoACL && len(p.issues) == 0 {
		p.add(root, "the policy has no acls and no principals, so every request would be denied; add an acls list, "+
			"or allow_if_no_acl: true to let every request through (see docs/security.md)")
	}
	return src
}

// mapping calls fn for each key of a mapping node, reporting duplicate keys
// and keys fn does not know (fn returns false).
func (p *parser) mapping(n *yaml.Node, what string, fn func(key string, k, v *yaml.Node) bool) {
	if n.Kind != yaml.MappingNode {
		p.add(n, "%s: want a mapping of keys to values", what)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.add(k, "%s: keys must be plain names", what)
			continue
		}
		if seen[k.Value] {
			p.add(k, "%s: key %q given twice", what, k.Value)
			continue
		}
		seen[k.Value] = true
		if !fn(k.Value, k, v) {
			p.add(k, "%s: unknown key %q", what, k.Value)
		}
	}
}

func (p *parser) seq(n *yaml.Node, what string, fn func(*yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		p.add(n, "%s: want a list", what)
		return
	}
	for _, c := range n.Content {
		fn(c)
	}
}

func (p *parser) str(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.add(n, "%s: want a string", what)
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on":
			return true
		case "false", "no", "off":
			return false
		}
	}
	p.add(n, "%s: want true or false", what)
	return false
}

func (p *parser) mode(n *yaml.Node, rule bool) (Mode, bool) {
	switch s := p.str(n, "mode"); strings.ToLower(s) {
	case "enforce":
		return ModeEnforce, true
	case "audit":
		return ModeAudit, true
	case "":
		return 0, false
	default:
		what := "mode"
		if rule {
			what = "rule mode"
		}
		p.add(n, "%s %q: want enforce or audit", what, s)
		return 0, false
	}
}

func (p *parser) principals(n *yaml.Node) []principalSpec {
	var out []principalSpec
	byName := map[string]Pos{}
	p.seq(n, "principals", func(e *yaml.Node) {
		var ps principalSpec
		var hasPassword, hasEnv bool
		ps.pos = Pos{e.Line, e.Column}
		p.mapping(e, "principal", func(key string, k, v *yaml.Node) bool {
			switch key {
			case "name":
				ps.name = p.str(v, "principal name")
				if ps.name != "" {
					if strings.Contains(ps.name, ":") || strings.ContainsAny(ps.name, ",=") || ps.name == Wildcard {
						p.add(v, "principal name %q: write the bare user name (alice), not User:alice; SCRAM names may not hold ',', '=' or be '*'", ps.name)
					}
					if first, dup := byName[ps.name]; dup {
						p.add(v, "principal %q is defined twice (first at line %d)", ps.name, first.Line)
					} else {
						byName[ps.name] = Pos{v.Line, v.Column}
					}
				}
			case "password":
				hasPassword = true
				ps.password = p.str(v, "password")
				if ps.password == "" && v.Kind == yaml.ScalarNode {
					p.add(v, "principal password is empty")
				}
			case "password_env":
				hasEnv = true
				name := p.str(v, "password_env")
				if name == "" {
					break
				}
				val, ok := p.getenv(name)
				switch {
				case !ok:
					p.add(v, "password_env %s is not set in the environment; export it before starting pipemesh", name)
				case val == "":
					p.add(v, "password_env %s is set but empty", name)
				default:
					ps.password = val
				}
			default:
				return false
			}
			return true
		})
		if e.Kind != yaml.MappingNode {
			return
		}
		switch {
		case ps.name == "" && !hasKey(e, "name"):
			p.add(e, "principal without a name")
		case hasPassword && hasEnv:
			p.add(e, "principal %q: give password or password_env, not both", ps.name)
		case !hasPassword && !hasEnv:
			p.add(e, "principal %q has no password source: add password or password_env", ps.name)
		}
		out = append(out, ps)
	})
	return out
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func (p *parser) rules(n *yaml.Node) []Rule {
	var out []Rule
	p.seq(n, "acls", func(e *yaml.Node) {
		r := Rule{Index: len(out), Pos: Pos{e.Line, e.Column}}
		bad := len(p.issues)
		var nameNode *yaml.Node
		var got [8]bool
		const (
			fPrincipal = iota
			fOperation
			fResource
			fPermission
		)
		p.mapping(e, "acl", func(key string, k, v *yaml.Node) bool {
			switch key {
			case "principal":
				got[fPrincipal] = true
				r.Principal = p.str(v, "principal")
				if r.Principal != "" {
					if err := checkPrincipal(r.Principal, true); err != "" {
						p.add(v, "principal %q: %s", r.Principal, err)
					}
				}
			case "operation":
				got[fOperation] = true
				s := p.str(v, "operation")
				op, ok := ParseOperation(s)
				if !ok && s != "" {
					p.add(v, "unknown operation %q: want one of %s", s, strings.Join(opNames[:], ", "))
				}
				r.Operation = op
			case "resource":
				got[fResource] = true
				s := p.str(v, "resource")
				rt, ok := ParseResourceType(s)
				if !ok && s != "" {
					p.add(v, "unknown resource type %q: want topic, group, transactional_id, cluster, flight_dataset or flight_action", s)
				}
				r.Resource = rt
			case "name":
				nameNode = v
				r.Name = p.str(v, "name")
			case "pattern":
				switch s := p.str(v, "pattern"); strings.ToLower(s) {
				case "literal":
					r.Pattern = PatternLiteral
				case "prefixed":
					r.Pattern = PatternPrefixed
				case "":
				default:
					p.add(v, "bad pattern %q: want literal or prefixed (a literal \"*\" matches every name)", s)
				}
			case "permission":
				got[fPermission] = true
				switch s := p.str(v, "permission"); strings.ToLower(s) {
				case "allow":
					r.Permission = Allow
				case "deny":
					r.Permission = Deny
				case "":
				default:
					p.add(v, "bad permission %q: want allow or deny", s)
				}
			case "host":
				if s := p.str(v, "host"); s != "" && s != Wildcard {
					p.add(v, "host %q: pipemesh rules match every host; only \"*\" is accepted (restrict sources with network policy)", s)
				}
			case "mode":
				if m, ok := p.mode(v, true); ok {
					r.Mode = m
				}
			default:
				return false
			}
			return true
		})
		if e.Kind != yaml.MappingNode {
			return
		}
		for f, key := range []string{"principal", "operation", "resource", "permission"} {
			if !got[f] {
				p.add(e, "acl is missing %s", key)
			}
		}
		switch {
		case r.Resource == ResCluster && r.Name == "":
			r.Name = ClusterName
		case r.Resource == ResCluster && r.Name != ClusterName && r.Name != Wildcard:
			p.add(nameNode, "cluster rules name %q (or leave name out), not %q", ClusterName, r.Name)
		case nameNode == nil:
			p.add(e, "acl is missing name (use \"*\" with pattern literal for every %s)", r.Resource)
		case r.Name == "":
			p.add(nameNode, "acl name is empty")
		case r.Pattern == PatternPrefixed && r.Name == Wildcard:
			p.add(nameNode, "prefixed pattern with name \"*\": use pattern literal for every name")
		}
		if r.Mode != ModeInherit && r.Permission == Allow && got[fPermission] {
			p.add(e, "mode applies to deny rules only (an allow in audit would be the same allow)")
		}
		if ok := validOp(r.Resource, r.Operation); !ok && got[fOperation] && got[fResource] {
			why := ""
			if r.Resource == ResFlightAction {
				why = "; calling an action, and seeing it in ListActions, is WRITE"
			}
			p.add(e, "operation %s does not apply to resource type %s (%s allows %s%s)", r.Operation, r.Resource, allower(r.Resource), opsFor(r.Resource), why)
		}
		if len(p.issues) == bad {
			out = append(out, r)
		} else {
			out = append(out, Rule{Index: -1})
		}
	})
	// Keep indexes equal to list positions; drop the bad placeholders only
	// once all issues are known (compile is not reached then anyway).
	return out
}

// checkPrincipal checks "Type:name". Rules may use User:* for everyone.
func checkPrincipal(s string, wildcardOK bool) string {
	typ, name, ok := strings.Cut(s, ":")
	switch {
	case !ok || name == "":
		return "want Type:name, for example User:alice"
	case typ != "User":
		return "only the User principal type exists (User:alice)"
	case name == Wildcard && !wildcardOK:
		return "User:* is not allowed here"
	}
	return ""
}

// validOps lists the operations Kafka accepts per resource type.
var validOps = [numResourceTypes][]Operation{
	ResTopic:           {OpRead, OpWrite, OpCreate, OpDelete, OpAlter, OpDescribe, OpDescribeConfigs, OpAlterConfigs, OpAll},
	ResGroup:           {OpRead, OpDelete, OpDescribe, OpDescribeConfigs, OpAlterConfigs, OpAll},
	ResTransactionalID: {OpWrite, OpDescribe, OpAll},
	ResCluster:         {OpCreate, OpAlter, OpDescribe, OpDescribeConfigs, OpAlterConfigs, OpIdempotentWrite, OpClusterAction, OpAll},
	// READ: GetFlightInfo, PollFlightInfo, GetSchema, DoGet; WRITE: DoPut;
	// DESCRIBE: ListFlights (implied by READ and WRITE, as for topics).
	ResFlightDataset: {OpRead, OpWrite, OpDescribe, OpAll},
	// WRITE: DoAction of that type, and seeing it in ListActions. No
	// READ or DESCRIBE: the proxy asks only one question of an action.
	ResFlightAction: {OpWrite, OpAll},
}

func validOp(rt ResourceType, op Operation) bool {
	if rt >= numResourceTypes {
		return false
	}
	for _, o := range validOps[rt] {
		if o == op {
			return true
		}
	}
	return false
}

// allower names whose table validOps follows for rt.
func allower(rt ResourceType) string {
	if rt == ResFlightDataset || rt == ResFlightAction {
		return "pipemesh"
	}
	return "Kafka"
}

func opsFor(rt ResourceType) string {
	var s []string
	for _, o := range validOps[rt] {
		s = append(s, o.String())
	}
	return strings.Join(s, ", ")
}
