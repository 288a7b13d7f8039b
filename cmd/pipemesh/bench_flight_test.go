package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/benchmarks"
)

func TestBenchFlightRunWritesTableAndJSON(t *testing.T) {
	useBuiltBinary(t)
	jsonPath := filepath.Join(t.TempDir(), "flight.json")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "flight", "--bytes", "8MiB", "--batch-rows", "8192",
		"--batches-per-chunk", "4", "--streams", "2", "--rounds", "1", "--compression", "lz4", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "DoGet GB/s")
	assert.Contains(t, out.String(), "proxy CPU-s per GB")
	assert.Contains(t, errOut.String(), "proxied round 1: DoGet", "plain progress lines on a non-terminal")

	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep benchmarks.FlightReport
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assert.True(t, rd.Verified, rd.Error)
		assert.Positive(t, rd.GetGBPerSec)
		assert.Positive(t, rd.PutGBPerSec)
	}
	assert.Positive(t, rep.Get.Ratio)
}

func TestBenchFlightWithProxyRecompression(t *testing.T) {
	useBuiltBinary(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "flight", "--bytes", "4MiB", "--batch-rows", "8192",
		"--rounds", "1", "--proxy-compress", "zstd"}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, errOut.String(), "re-encoded by the proxy (zstd), every batch checked value for value")
	assert.Contains(t, out.String(), "the proxy re-encoded proxied DoGet streams with zstd")
}

func TestBenchFlightFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bytes", "10"}, "--bytes 10: want at least 1MiB"},
		{[]string{"--compression", "gzip"}, `--compression "gzip": want none, lz4 or zstd`},
		{[]string{"--direct", "a:1"}, "--direct and --proxy go together"},
		{[]string{"--streams", "0"}, "--streams 0"},
		{[]string{"--proxy-compress", "gzip"}, `--proxy-compress "gzip": want lz4 or zstd`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var errOut bytes.Buffer
			assert.Equal(t, 1, run(context.Background(), append([]string{"bench", "flight"}, tc.args...), io.Discard, &errOut))
			assert.Contains(t, errOut.String(), tc.want)
		})
	}
}

func TestBenchFlightFailsWhenTheSetupCannotStart(t *testing.T) {
	t.Cleanup(func() { executable = os.Executable })
	executable = func() (string, error) { return "/bin/false", nil }
	var errOut bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"bench", "flight", "--bytes", "1MiB"}, io.Discard, &errOut))
	assert.Contains(t, errOut.String(), "exited")
}
