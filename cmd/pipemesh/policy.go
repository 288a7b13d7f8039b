package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/policy"
)

const policyAbout = `Check a policy file, or explain a decision it makes.

  pipemesh policy check FILE
      Validate FILE as serve --policy would load it, and print every problem
      as file:line:col: what is wrong, in the ACLs and in the compression:
      and quotas: sections alike. Exit status 1 when there is any.

  pipemesh policy explain FILE --principal User:bob --operation WRITE --topic orders
      Print the decision (allow, deny, or would_deny in audit mode) and the
      rule that made it. Name the resource with one of --topic, --group,
      --transactional-id, --cluster, or --flight-dataset for an Arrow Flight
      dataset (pipemesh policy explain FILE --principal User:alice
      --operation READ --flight-dataset sales.orders).

The file format is in docs/security.md.`

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "Usage: pipemesh policy check|explain FILE [flags]\n\n%s\n", policyAbout)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprintf(stdout, "Usage: pipemesh policy check|explain FILE [flags]\n\n%s\n", policyAbout)
		return flag.ErrHelp
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	case "explain":
		return runPolicyExplain(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "pipemesh policy: unknown subcommand %q; want check or explain\n", args[0])
	return errUsage
}

// fileFirst moves a leading FILE argument after the flags, so that both
// `explain FILE --flags` and `explain --flags FILE` parse.
func fileFirst(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy check", "FILE", "Validate a policy file and print every problem as file:line:col: what is wrong.", stderr)
	file, rest := fileFirst(args)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 || file == "" {
		fs.Usage()
		return errUsage
	}
	p, err := policy.Load(file, policy.Options{})
	if err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) {
			fmt.Fprintln(stdout, pe.Error())
			return fmt.Errorf("%s: %d problem(s)", file, len(pe.Issues))
		}
		return err
	}
	quotas := ""
	for _, c := range []struct {
		n    int
		what string
	}{{len(p.FlightQuotas()), "flight quotas"}, {len(p.Compression()), "compression rules"}, {len(p.Quotas()), "quota rules"}} {
		if c.n > 0 {
			quotas += fmt.Sprintf(", %d %s", c.n, c.what)
		}
	}
	fmt.Fprintf(stdout, "%s: ok: %d rules%s, %d super users, mode %s, SASL %s\n", file, len(p.Rules()), quotas, len(p.SuperUsers()), p.Mode,
		map[bool]string{true: "on (the file defines principals; Flight basic auth too)", false: "off (no principals)"}[p.HasPrincipals()])
	return nil
}

func runPolicyExplain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy explain", "FILE --principal User:NAME --operation OP (--topic|--group|--transactional-id|--flight-dataset|--flight-action NAME | --cluster)",
		"Print the decision the policy makes and the rule that made it.", stderr)
	principal := fs.String("principal", "", "principal asking, as `User:name`")
	operation := fs.String("operation", "", "ACL `operation`: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CLUSTER_ACTION")
	topic := fs.String("topic", "", "topic `name`")
	group := fs.String("group", "", "consumer group `name`")
	txn := fs.String("transactional-id", "", "transactional `id`")
	cluster := fs.Bool("cluster", false, "the cluster resource")
	dataset := fs.String("flight-dataset", "", "Arrow Flight dataset `name` (descriptor path joined with /, e.g. sales/2026); READ, WRITE or DESCRIBE")
	action := fs.String("flight-action", "", "Arrow Flight DoAction `type` (e.g. BeginTransaction); WRITE")
	file, rest := fileFirst(args)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 || file == "" {
		fs.Usage()
		return errUsage
	}
	if !strings.HasPrefix(*principal, "User:") || len(*principal) == len("User:") {
		return fmt.Errorf("--principal %q: want User:name, for example User:bob", *principal)
	}
	op, ok := policy.ParseOperation(*operation)
	if !ok || op == policy.OpAll {
		return fmt.Errorf("--operation %q: want one of READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CLUSTER_ACTION", *operation)
	}
	var rt policy.ResourceType
	var name string
	n := 0
	for _, c := range []struct {
		set  bool
		rt   policy.ResourceType
		name string
	}{{*topic != "", policy.ResTopic, *topic}, {*group != "", policy.ResGroup, *group}, {*txn != "", policy.ResTransactionalID, *txn}, {*cluster, policy.ResCluster, policy.ClusterName}, {*dataset != "", policy.ResFlightDataset, *dataset}, {*action != "", policy.ResFlightAction, *action}} {
		if c.set {
			rt, name = c.rt, c.name
			n++
		}
	}
	if n != 1 {
		return errors.New("name exactly one resource: --topic, --group, --transactional-id, --flight-dataset, --flight-action or --cluster")
	}
	p, err := policy.Load(file, policy.Options{})
	if err != nil {
		return err
	}
	d := p.Decide(*principal, op, rt, name)
	fmt.Fprintf(stdout, "%s: %s %s %s %q\n", strings.ToUpper(d.Result.String()), *principal, op, rt, name)
	switch d.Reason {
	case policy.ReasonSuperUser:
		fmt.Fprintf(stdout, "because %s is a super user\n", *principal)
	case policy.ReasonNoACL:
		fmt.Fprintf(stdout, "because no rule names this %s and allow_if_no_acl is true\n", rt)
	case policy.ReasonNoAllow:
		fmt.Fprintf(stdout, "because no allow rule matches (no matching allow means deny)\n")
	default:
		fmt.Fprintf(stdout, "by %s\n", d.Rule)
	}
	if d.Result == policy.WouldDeny {
		fmt.Fprintln(stdout, "audit mode: the request would be let through, logged and counted as would_deny")
	}
	return nil
}

// setupPolicy loads --policy into a reloading store and opens the audit
// log. The store reloads on SIGHUP and on file change until ctx ends.
func setupPolicy(ctx context.Context, s *settings, log *slog.Logger, reg prometheus.Registerer, stderr io.Writer) (func(), error) {
	if s.policyPath == "" {
		if s.auditLog != "" {
			return nil, errors.New("--audit-log needs --policy: there are no decisions to log without one")
		}
		return func() {}, nil
	}
	store, err := policy.NewStore(policy.StoreConfig{Path: s.policyPath, Logger: log, Registerer: reg,
		Options: policy.Options{RulesIn: s.rulesIn}})
	if err != nil {
		return nil, fmt.Errorf("--policy: %w", err)
	}
	s.proxy.Policy = store
	s.proxy.AuditAllows = s.auditAllows
	closeAudit := func() {}
	var audit io.Writer
	switch s.auditLog {
	case "":
	case "-":
		audit = &lockedWriter{w: stderr}
	default:
		f, err := os.OpenFile(s.auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--audit-log: %w", err)
		}
		audit = &lockedWriter{w: f}
		closeAudit = func() { f.Close() }
	}
	if audit != nil {
		s.proxy.AuditLog = audit
	}
	// One policy file governs both proxies: its flight_dataset rules,
	// principals and flight_quotas apply to Flight calls.
	if s.flight != nil {
		s.flight.UsePolicy(store)
		s.flight.AuditAllows = s.auditAllows
		if audit != nil {
			s.flight.AuditLog = audit
		}
	}
	p := store.Current()
	log.Info("policy loaded", "file", s.policyPath, "rules", len(p.Rules()), "mode", p.Mode.String(), "sasl", p.HasPrincipals(),
		"kafka", !s.noKafka, "flight", s.flight != nil)
	go store.Run(ctx, 0)
	return closeAudit, nil
}

// lockedWriter writes one audit line at a time for the Kafka and Flight
// proxies, which share the audit log.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
