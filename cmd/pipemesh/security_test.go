package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpstreamTLSFlagWinsOverFile: a flag given on the command line wins
// over the config file (docs/configuration.md#precedence), --upstream-tls=false
// included.
func TestUpstreamTLSFlagWinsOverFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(path, []byte("kafka:\n  upstream: [127.0.0.1:9092]\n  upstream_tls: {enabled: true}\n"), 0o600))
	for _, tt := range []struct {
		args []string
		tls  bool
	}{
		{nil, true},
		{[]string{"--upstream-tls=false"}, false},
		{[]string{"--upstream-tls"}, true},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		var f serveFlags
		f.register(fs)
		require.NoError(t, fs.Parse(append([]string{"--config", path}, tt.args...)))
		s, err := f.resolve(fs)
		require.NoError(t, err)
		assert.Equal(t, tt.tls, s.security.upstreamTLS != nil, "%v", tt.args)
	}
}
