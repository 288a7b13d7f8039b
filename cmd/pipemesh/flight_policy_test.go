package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mixedPolicy is one file for Kafka topics and Flight datasets.
const mixedPolicy = `principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: READ, resource: topic, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: deny}
`

func TestPolicyExplainFlightDataset(t *testing.T) {
	path := writePolicy(t, mixedPolicy)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--principal", "User:alice", "--operation", "READ", "--flight-dataset", "sales.orders"},
			[]string{`ALLOW: User:alice READ flight_dataset "sales.orders"`, `by acls[2] at line 7: allow User:alice READ on flight_dataset prefixed:"sales."`}},
		{[]string{"--principal", "User:alice", "--operation", "DESCRIBE", "--flight-dataset", "sales.orders"},
			[]string{`ALLOW: User:alice DESCRIBE flight_dataset "sales.orders"`, "by acls[2] at line 7"}},
		{[]string{"--principal", "User:bob", "--operation", "READ", "--flight-dataset", "sales.orders"},
			[]string{`DENY: User:bob READ flight_dataset "sales.orders"`, `by acls[4] at line 9: deny User:bob READ on flight_dataset prefixed:"sales."`}},
		{[]string{"--principal", "User:alice", "--operation", "READ", "--flight-dataset", "hr.people"},
			[]string{`DENY: User:alice READ flight_dataset "hr.people"`, "no allow rule matches"}},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		args := append([]string{"policy", "explain", path}, tt.args...)
		require.Equal(t, 0, run(context.Background(), args, &out, &errOut), errOut.String())
		for _, w := range tt.want {
			assert.Contains(t, out.String(), w)
		}
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"policy", "explain", path, "--principal", "User:bob",
		"--operation", "READ", "--flight-dataset", "d", "--topic", "t"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "--flight-dataset")
}
