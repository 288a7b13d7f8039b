package protocol

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestWriteFuzzSeeds rewrites the seed corpora under testdata/fuzz from
// kmsg-encoded messages. It runs only when asked:
//
//	PIPEMESH_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./protocol/
//
// Seeds avoid -1 defaults and other values whose encoding holds three bytes
// with the high bit set in a row, because the differential targets do not
// hand such inputs to kmsg (see mayStallKmsg); the fuzzer still mutates
// towards them.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PIPEMESH_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set PIPEMESH_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	seeds := map[string]map[string][]any{
		"FuzzReader":             readerSeeds(),
		"FuzzParseRequestHeader": requestHeaderSeeds(),
		"FuzzProduceAcks":        produceAcksSeeds(),
		"FuzzHasTopLevelTags":    topLevelTagSeeds(),
	}
	for target, byName := range seeds {
		dir := filepath.Join("testdata", "fuzz", target) // crashers the fuzzer added stay
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, args := range byName {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), corpusFile(args...), 0o644))
		}
		t.Logf("%s: %d seeds", target, len(byName))
	}
}

// corpusFile encodes fuzz arguments in the "go test fuzz v1" format.
func corpusFile(args ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
		case int16:
			fmt.Fprintf(&b, "int16(%d)\n", v)
		case uint8:
			fmt.Fprintf(&b, "byte(%s)\n", strconv.QuoteRune(rune(v)))
		case bool:
			fmt.Fprintf(&b, "bool(%t)\n", v)
		default:
			panic(fmt.Sprintf("corpusFile: %T", a))
		}
	}
	return []byte(b.String())
}

func readerSeeds() map[string][]any {
	apiVersions := kmsg.NewPtrApiVersionsRequest()
	apiVersions.SetVersion(3)
	apiVersions.ClientSoftwareName, apiVersions.ClientSoftwareVersion = "kgo", "1.0"
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.SetVersion(4)
	hb.Group, hb.MemberID, hb.Generation = "g", "m", 1
	a := AppendFrame(nil, requestFrame(apiVersions, 1, strp("c")))
	h := AppendFrame(nil, requestFrame(hb, 2, strp("c")))
	pipelined := concat(a, h, a, AppendFrame(nil, nil))
	return map[string][]any{
		"pipelined-requests":         {pipelined, uint8(0), false},
		"pipelined-requests-onebyte": {pipelined, uint8(7), true},
		"cut-in-second-frame":        {pipelined[:len(a)+5], uint8(20), false},
		"cut-in-size":                {pipelined[:len(a)+2], uint8(1), true},
		"oversized-after-frame":      {concat(a, sizePrefix(fuzzMaxFrame+1), make([]byte, 8)), uint8(0), false},
		"tls-after-frame":            {concat(h, []byte{0x16, 0x03, 0x01, 0x02, 0x00}), uint8(2), false},
	}
}

func requestHeaderSeeds() map[string][]any {
	seeds := map[string][]any{}
	for key := range int16(maxKnownKey) {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		name := strings.ToLower(kmsg.NameForKey(key))
		req.SetVersion(req.MaxVersion())
		seeds[fmt.Sprintf("%s-v%d", name, req.MaxVersion())] = []any{requestFrame(req, 1, strp("client-1"), tag{0, []byte("x")})}
		req.SetVersion(0)
		seeds[fmt.Sprintf("%s-v0-null-client", name)] = []any{requestFrame(req, 2, nil)}
	}
	seeds["unknown-key"] = []any{append([]byte{0x03, 0xe7, 0, 0, 0, 0, 0, 9, 0, 1, 'c'}, 1, 2, 3)}
	return seeds
}

func produceAcksSeeds() map[string][]any {
	seeds := map[string][]any{}
	max, _ := MaxVersion(ProduceKey)
	for v := int16(0); v <= max; v++ {
		seeds[fmt.Sprintf("v%d-null-txn-acks1", v)] = []any{v, produceRequest(v, nil, 1)}
		seeds[fmt.Sprintf("v%d-txn-acks0", v)] = []any{v, produceRequest(v, strp("txn-1"), 0)}
	}
	return seeds
}

func topLevelTagSeeds() map[string][]any {
	seeds := map[string][]any{}
	for _, shape := range walkShapes {
		if strings.Contains(shape.name, "large") {
			continue
		}
		name := strings.ReplaceAll(strings.ReplaceAll(shape.name, " ", "-"), ",", "")
		for _, v := range []int16{10, 12, 13} {
			seeds[fmt.Sprintf("produce-v%d-%s", v, name)] = []any{false, v, produceResponse(v, shape.s).AppendTo(nil)}
		}
		for _, v := range []int16{16, 18} {
			seeds[fmt.Sprintf("fetch-v%d-%s", v, name)] = []any{true, v, fetchResponse(v, shape.s).AppendTo(nil)}
		}
	}
	return seeds
}

func TestFuzzSeedsReachKmsg(t *testing.T) {
	// The differential targets compare with kmsg only for inputs
	// mayStallKmsg lets through; the seeds must be among them.
	for name, args := range produceAcksSeeds() {
		require.False(t, mayStallKmsg(args[1].([]byte)), name)
	}
	for name, args := range topLevelTagSeeds() {
		require.False(t, mayStallKmsg(args[2].([]byte)), name)
	}
}
