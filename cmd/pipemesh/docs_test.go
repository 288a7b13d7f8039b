package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// registeredFlags runs `pipemesh ARGS --help` and returns the flags it
// prints, as --name.
func registeredFlags(t *testing.T, args ...string) []string {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), append(args, "--help"), &out, &out)
	require.Zero(t, code, "pipemesh %v --help: %s", args, out.String())
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
		flags = append(flags, "--"+m[1])
	}
	sort.Strings(flags)
	return flags
}

// docFlag is a flag name as docs write it; a trailing "-" is a family
// (`--kafka-tls-*`), not a name.
var docFlag = regexp.MustCompile(`--[a-z][a-z0-9]*(?:-[a-z0-9]+)*\b(?:-)?`)

// sectionFlags returns the flags named in the first column of the tables
// of section "## name" of a markdown file.
func sectionFlags(t *testing.T, doc, name string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n## "+name+"\n")
	require.True(t, ok, "no section ## %s", name)
	rest, _, _ = strings.Cut(rest, "\n## ")
	seen := map[string]bool{}
	for _, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, f := range docFlag.FindAllString(first, -1) {
			seen[f] = true
		}
	}
	flags := make([]string, 0, len(seen))
	for f := range seen {
		flags = append(flags, f)
	}
	sort.Strings(flags)
	return flags
}

// TestConfigurationDocMatchesFlags: every flag of serve, broker,
// flight-server and demo has its row in docs/configuration.md, and every
// row there names a flag the command has.
func TestConfigurationDocMatchesFlags(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	for _, cmd := range []string{"serve", "broker", "flight-server", "demo"} {
		assert.Equal(t, registeredFlags(t, cmd), sectionFlags(t, string(b), cmd), "docs/configuration.md ## %s against pipemesh %s --help", cmd, cmd)
	}
}

// TestDocsNameOnlyRealFlags: the docs and the README name no flag that no
// command has, and every flag of every command is named somewhere in them.
func TestDocsNameOnlyRealFlags(t *testing.T) {
	var all []string
	for _, args := range [][]string{{"serve"}, {"broker"}, {"flight-server"}, {"demo"}, {"bench", "kafka"}, {"bench", "flight"}, {"bench", "tcp-forward"}, {"policy", "explain"}} {
		all = append(all, registeredFlags(t, args...)...)
	}
	// Flags of other programs the docs show (--upstream of another proxy
	// is also bench tcp-forward's).
	external := []string{"--help", "--add-opens"}
	files, err := filepath.Glob("../../docs/*.md")
	require.NoError(t, err)
	files = append(files, "../../README.md")
	named := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, flag := range docFlag.FindAllString(string(b), -1) {
			if strings.HasSuffix(flag, "-") || slices.Contains(external, flag) {
				continue
			}
			named[flag] = true
			assert.Contains(t, all, flag, "%s names %s, which no pipemesh command has", filepath.Base(f), flag)
		}
	}
	for _, flag := range all {
		assert.True(t, named[flag], "%s is in no doc", flag)
	}
}
