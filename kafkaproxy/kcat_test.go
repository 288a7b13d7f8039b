package kafkaproxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireExternal reports whether a missing external tool fails the test
// instead of skipping it (CI sets PIPEMESH_REQUIRE_EXTERNAL=1 where the
// tools are installed).
func requireExternal() bool { return os.Getenv("PIPEMESH_REQUIRE_EXTERNAL") == "1" }

// externalTool returns the path of an external client program, skipping the
// test when it is not installed, or failing it when PIPEMESH_REQUIRE_EXTERNAL=1.
func externalTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if requireExternal() {
			t.Fatalf("%s is not installed and PIPEMESH_REQUIRE_EXTERNAL=1: %v", name, err)
		}
		t.Skipf("%s is not installed (set PIPEMESH_REQUIRE_EXTERNAL=1 to fail instead): %v", name, err)
	}
	return path
}

// runTool runs an external program with stdin and a deadline, and returns
// its stdout. A non-zero exit or the deadline fails the test with stderr.
func runTool(t *testing.T, timeout time.Duration, stdin []byte, path string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = 2 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %s\nstdout:\n%s\nstderr:\n%s", path, strings.Join(args, " "), timeout, stdout.Bytes(), stderr.Bytes())
	}
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", path, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("%s %s: %s, %d bytes out", path, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), stdout.Len())
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", stderr.Bytes())
	}
	return stdout.Bytes()
}

// kcatArgs are the flags every kcat call gets: the proxy as bootstrap,
// ApiVersions negotiation on (librdkafka's default, made explicit), no
// debug output, and short timeouts so a hang shows as a failure. Metadata is
// refreshed every second so that periodic refreshes run through the proxy
// while requests are in flight. PIPEMESH_KCAT_DEBUG=protocol,broker (say)
// turns librdkafka's debug log on when investigating a failure.
func kcatArgs(addr string, args ...string) []string {
	if d := os.Getenv("PIPEMESH_KCAT_DEBUG"); d != "" {
		args = append([]string{"-d", d}, args...)
	}
	return append([]string{
		"-b", addr,
		"-X", "api.version.request=true",
		"-X", "socket.timeout.ms=10000",
		"-X", "topic.metadata.refresh.interval.ms=1000",
		"-m", "15",
	}, args...)
}

// proxyCounter sums the samples (counters and gauges) of a proxy metric over
// the series whose label has value (every series when label is empty).
func proxyCounter(t testing.TB, e *env, metric, label, value string) float64 {
	t.Helper()
	var want map[string]string
	if label != "" {
		want = map[string]string{label: value}
	}
	var sum float64
	for _, m := range proxySeries(t, e, metric, want) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// proxySeries returns a proxy metric's series whose labels include all of
// want.
func proxySeries(t testing.TB, e *env, metric string, want map[string]string) []*dto.Metric {
	t.Helper()
	mfs, err := e.registry.Gather()
	require.NoError(t, err)
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := 0
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
					match++
				}
			}
			if match == len(want) {
				out = append(out, m)
			}
		}
	}
	return out
}

// requireClientTrafficProxied checks that a client's requests of the given
// APIs reached the proxy, which they do not when a broker or coordinator
// address leaks and the client goes around it, and that no connection was
// closed over a protocol or rewrite error.
func requireClientTrafficProxied(t testing.TB, e *env, apis ...string) {
	t.Helper()
	for _, api := range apis {
		assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_requests_total", "api", api), "no %s request went through the proxy", api)
	}
	e2eNoProtocolErrors(t, e)
}

var hostPortRE = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d+\b`)

// TestKcatMetadata lists metadata with `kcat -L` and `kcat -L -J`: every
// broker kcat is told about is a proxy listener, every proxy listener is
// listed, and no upstream broker address appears anywhere in the output.
func TestKcatMetadata(t *testing.T) {
	kcat := externalTool(t, "kcat")
	e := startEnv(t, withTopic("kcat-meta", 3))
	proxyAddrs := slices.Sorted(maps.Values(e.proxy.BrokerAddrs()))
	require.Len(t, proxyAddrs, 3)
	upstream := e.cluster.ListenAddrs()

	checkNoUpstream := func(out []byte) {
		t.Helper()
		for _, hp := range hostPortRE.FindAllString(string(out), -1) {
			assert.NotContains(t, upstream, hp, "kcat output names an upstream broker")
			if hp != e.addr {
				assert.Contains(t, proxyAddrs, hp, "kcat output names an address that is neither the bootstrap nor a proxy broker listener")
			}
		}
	}

	t.Run("plain", func(t *testing.T) {
		out := runTool(t, 30*time.Second, nil, kcat, kcatArgs(e.addr, "-L")...)
		checkNoUpstream(out)
		// "  broker 1 at 127.0.0.1:40001 (controller)"
		var listed []string
		for _, m := range regexp.MustCompile(`(?m)^\s*broker (-?\d+) at (\S+)`).FindAllStringSubmatch(string(out), -1) {
			listed = append(listed, m[2])
			var id int32
			_, err := fmt.Sscan(m[1], &id)
			require.NoError(t, err)
			assert.Equal(t, e.proxy.BrokerAddrs()[id], m[2], "broker %d", id)
		}
		slices.Sort(listed)
		assert.Equal(t, proxyAddrs, listed, "kcat -L output:\n%s", out)
		assert.Contains(t, string(out), `topic "kcat-meta" with 3 partitions`)
	})

	t.Run("json", func(t *testing.T) {
		out := runTool(t, 30*time.Second, nil, kcat, kcatArgs(e.addr, "-L", "-J")...)
		checkNoUpstream(out)
		var md struct {
			Orig struct {
				ID   int32  `json:"id"`
				Name string `json:"name"`
			} `json:"originating_broker"`
			Brokers []struct {
				ID   int32  `json:"id"`
				Name string `json:"name"`
			} `json:"brokers"`
			Topics []struct {
				Topic      string            `json:"topic"`
				Partitions []json.RawMessage `json:"partitions"`
			} `json:"topics"`
		}
		require.NoError(t, json.Unmarshal(out, &md), "kcat -L -J output:\n%s", out)
		assert.Equal(t, e.addr+"/bootstrap", md.Orig.Name, "kcat asked the proxy bootstrap")
		var listed []string
		for _, b := range md.Brokers {
			listed = append(listed, b.Name)
			assert.Equal(t, e.proxy.BrokerAddrs()[b.ID], b.Name, "broker %d", b.ID)
		}
		slices.Sort(listed)
		assert.Equal(t, proxyAddrs, listed)
		var found bool
		for _, tp := range md.Topics {
			if tp.Topic == "kcat-meta" {
				found = true
				assert.Len(t, tp.Partitions, 3)
			}
		}
		assert.True(t, found, "topic kcat-meta missing from kcat -L -J")
	})
}

// TestKcatProduceConsumeGroup produces lines with keys (`kcat -P -K`) through
// the proxy and reads them back with a balanced consumer group (`kcat -C -G`)
// through the proxy: every line arrives once, key and value byte for byte,
// along with the header kcat was told to add.
func TestKcatProduceConsumeGroup(t *testing.T) {
	kcat := externalTool(t, "kcat")
	const (
		topic = "kcat-rt"
		n     = 2000
	)
	e := startEnv(t, withTopic(topic, 4))

	want := make(map[string]string, n)
	var in bytes.Buffer
	for i := range n {
		// Keys are split at the first '|'; values keep later ones, and
		// carry UTF-8, tabs excluded (the consume format uses them).
		k := fmt.Sprintf("key-%04d", i)
		v := fmt.Sprintf("value %d | ünïcødé ✓ %s :;,\"'{}", i, strings.Repeat("x", i%97))
		want[k] = v
		fmt.Fprintf(&in, "%s|%s\n", k, v)
	}
	runTool(t, 60*time.Second, in.Bytes(), kcat, kcatArgs(e.addr,
		"-P", "-t", topic, "-K", "|", "-H", "origin=kcat",
		"-X", "acks=all", "-X", "linger.ms=5")...)

	out := runTool(t, 90*time.Second, nil, kcat, kcatArgs(e.addr,
		"-C", "-G", "kcat-group", "-o", "beginning", "-c", fmt.Sprint(n),
		"-X", "auto.offset.reset=earliest",
		"-X", "session.timeout.ms=6000",
		"-X", "heartbeat.interval.ms=500",
		"-X", "enable.partition.eof=false",
		"-f", "%k\t%s\t%h\n", topic)...)

	seen := make(map[string]int, n)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, n, "kcat consumed a different number of messages")
	for _, line := range lines {
		parts := strings.Split(line, "\t")
		require.Len(t, parts, 3, "line %q", line)
		k, v, h := parts[0], parts[1], parts[2]
		seen[k]++
		w, ok := want[k]
		if !assert.True(t, ok, "unexpected key %q", k) {
			continue
		}
		assert.Equal(t, w, v, "value of %s", k)
		assert.Equal(t, "origin=kcat", h, "headers of %s", k)
	}
	require.Len(t, seen, n)
	for k, c := range seen {
		assert.Equal(t, 1, c, "key %s delivered %d times", k, c)
	}

	requireClientTrafficProxied(t, e, "Produce", "Fetch", "FindCoordinator", "JoinGroup", "SyncGroup", "OffsetCommit")

	// kcat commits as it closes; the commits went through the proxy to the
	// coordinator and cover every record.
	gi := e.cluster.GroupInfo("kcat-group")
	require.NotNil(t, gi, "group kcat-group unknown to the cluster")
	var committed int64
	for _, c := range gi.Commits[topic] {
		committed += c.Offset
	}
	assert.Equal(t, int64(n), committed, "committed offsets of kcat-group: %v", gi.Commits)
}
