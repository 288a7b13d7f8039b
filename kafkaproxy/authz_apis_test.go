package kafkaproxy_test

// Every API the policy maps, asked by a principal that may not: the answer
// carries the error code Kafka's own broker would give.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// codes collects every error code in a response, for the APIs below.
func codes(resp kmsg.Response) []int16 {
	var out []int16
	add := func(c int16) { out = append(out, c) }
	switch r := resp.(type) {
	case *kmsg.ListOffsetsResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.OffsetForLeaderEpochResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.OffsetCommitResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.OffsetFetchResponse:
		add(r.ErrorCode)
		for _, g := range r.Groups {
			add(g.ErrorCode)
		}
	case *kmsg.DescribeGroupsResponse:
		for _, g := range r.Groups {
			add(g.ErrorCode)
		}
	case *kmsg.DeleteGroupsResponse:
		for _, g := range r.Groups {
			add(g.ErrorCode)
		}
	case *kmsg.CreateTopicsResponse:
		for _, t := range r.Topics {
			add(t.ErrorCode)
		}
	case *kmsg.DeleteTopicsResponse:
		for _, t := range r.Topics {
			add(t.ErrorCode)
		}
	case *kmsg.CreatePartitionsResponse:
		for _, t := range r.Topics {
			add(t.ErrorCode)
		}
	case *kmsg.DeleteRecordsResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.DescribeConfigsResponse:
		for _, x := range r.Resources {
			add(x.ErrorCode)
		}
	case *kmsg.IncrementalAlterConfigsResponse:
		for _, x := range r.Resources {
			add(x.ErrorCode)
		}
	case *kmsg.InitProducerIDResponse:
		add(r.ErrorCode)
	case *kmsg.AddOffsetsToTxnResponse:
		add(r.ErrorCode)
	case *kmsg.EndTxnResponse:
		add(r.ErrorCode)
	case *kmsg.TxnOffsetCommitResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.AddPartitionsToTxnResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.DescribeACLsResponse:
		add(r.ErrorCode)
	case *kmsg.CreateACLsResponse:
		for _, x := range r.Results {
			add(x.ErrorCode)
		}
	case *kmsg.HeartbeatResponse:
		add(r.ErrorCode)
	case *kmsg.DescribeTopicPartitionsResponse:
		for _, t := range r.Topics {
			add(t.ErrorCode)
		}
	case *kmsg.DescribeProducersResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				add(p.ErrorCode)
			}
		}
	case *kmsg.DescribeTransactionsResponse:
		for _, s := range r.TransactionStates {
			add(s.ErrorCode)
		}
	case *kmsg.ElectLeadersResponse:
		add(r.ErrorCode)
	case *kmsg.ConsumerGroupHeartbeatResponse:
		add(r.ErrorCode)
	}
	return out
}

func TestAuthzApisAnsweredInKafkaTerms(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bob := saslClient(t, e, "SCRAM-SHA-512", "bob", "bob-secret")
	admin := saslClient(t, e, "PLAIN", "admin", "admin-secret")
	require.NoError(t, admin.ProduceSync(ctx, &kgo.Record{Topic: "secret", Value: []byte("s")}).FirstErr())

	topicID := func(name string) [16]byte {
		id, ok := e.proxy.Topics().ID(name)
		require.True(t, ok, "topic %s not in the proxy's id cache", name)
		return id
	}
	topicReq := func(name string) kmsg.ListOffsetsRequestTopic {
		t := kmsg.NewListOffsetsRequestTopic()
		t.Topic = name
		p := kmsg.NewListOffsetsRequestTopicPartition()
		t.Partitions = append(t.Partitions, p)
		return t
	}
	tests := []struct {
		name string
		req  func() kmsg.Request
		want int16
	}{
		{"ListOffsets allowed", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Topics = append(r.Topics, topicReq("orders"))
			return r
		}, 0},
		{"ListOffsets denied", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Topics = append(r.Topics, topicReq("secret"))
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"OffsetForLeaderEpoch denied", func() kmsg.Request {
			r := kmsg.NewPtrOffsetForLeaderEpochRequest()
			rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
			rt.Topic = "secret"
			rt.Partitions = append(rt.Partitions, kmsg.NewOffsetForLeaderEpochRequestTopicPartition())
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"OffsetFetch in a group bob may not describe", func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Group = "payroll"
			return r
		}, kerr.GroupAuthorizationFailed.Code},
		{"DescribeGroups denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeGroupsRequest()
			r.Groups = []string{"payroll"}
			return r
		}, kerr.GroupAuthorizationFailed.Code},
		{"DeleteGroups denied", func() kmsg.Request {
			r := kmsg.NewPtrDeleteGroupsRequest()
			r.Groups = []string{"billing"}
			return r
		}, kerr.GroupAuthorizationFailed.Code},
		{"CreateTopics denied", func() kmsg.Request {
			r := kmsg.NewPtrCreateTopicsRequest()
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "bobs-topic", 1, 1
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"DeleteTopics denied", func() kmsg.Request {
			r := kmsg.NewPtrDeleteTopicsRequest()
			rt := kmsg.NewDeleteTopicsRequestTopic()
			rt.Topic = kmsg.StringPtr("orders")
			r.Topics = append(r.Topics, rt)
			r.TopicNames = []string{"orders"}
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"CreatePartitions denied", func() kmsg.Request {
			r := kmsg.NewPtrCreatePartitionsRequest()
			rt := kmsg.NewCreatePartitionsRequestTopic()
			rt.Topic, rt.Count = "orders", 6
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"DeleteRecords denied", func() kmsg.Request {
			r := kmsg.NewPtrDeleteRecordsRequest()
			rt := kmsg.NewDeleteRecordsRequestTopic()
			rt.Topic = "orders"
			p := kmsg.NewDeleteRecordsRequestTopicPartition()
			rt.Partitions = append(rt.Partitions, p)
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"DescribeConfigs of a topic denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeConfigsRequest()
			x := kmsg.NewDescribeConfigsRequestResource()
			x.ResourceType, x.ResourceName = kmsg.ConfigResourceTypeTopic, "secret"
			r.Resources = append(r.Resources, x)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"IncrementalAlterConfigs of the cluster denied", func() kmsg.Request {
			r := kmsg.NewPtrIncrementalAlterConfigsRequest()
			x := kmsg.NewIncrementalAlterConfigsRequestResource()
			x.ResourceType, x.ResourceName = kmsg.ConfigResourceTypeBroker, "0"
			r.Resources = append(r.Resources, x)
			return r
		}, kerr.ClusterAuthorizationFailed.Code},
		{"InitProducerId with a transactional id denied", func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.TransactionalID = kmsg.StringPtr("bob-txn")
			r.TransactionTimeoutMillis = 10000
			return r
		}, kerr.TransactionalIDAuthorizationFailed.Code},
		{"AddPartitionsToTxn denied", func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.TransactionalID = "bob-txn"
			rt := kmsg.NewAddPartitionsToTxnRequestTopic()
			rt.Topic, rt.Partitions = "orders", []int32{0}
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TransactionalIDAuthorizationFailed.Code},
		{"AddOffsetsToTxn denied", func() kmsg.Request {
			r := kmsg.NewPtrAddOffsetsToTxnRequest()
			r.TransactionalID, r.Group = "bob-txn", "billing"
			return r
		}, kerr.TransactionalIDAuthorizationFailed.Code},
		{"EndTxn denied", func() kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.TransactionalID = "bob-txn"
			return r
		}, kerr.TransactionalIDAuthorizationFailed.Code},
		{"DescribeACLs denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeACLsRequest()
			r.ResourceType, r.ResourcePatternType, r.Operation, r.PermissionType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny, kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
			return r
		}, kerr.ClusterAuthorizationFailed.Code},
		{"DescribeTopicPartitions denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeTopicPartitionsRequest()
			rt := kmsg.NewDescribeTopicPartitionsRequestTopic()
			rt.Topic = "secret"
			r.Topics = append(r.Topics, rt)
			r.ResponsePartitionLimit = 100
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"DescribeProducers denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeProducersRequest()
			rt := kmsg.NewDescribeProducersRequestTopic()
			rt.Topic, rt.Partitions = "secret", []int32{0}
			r.Topics = append(r.Topics, rt)
			return r
		}, kerr.TopicAuthorizationFailed.Code},
		{"DescribeTransactions denied", func() kmsg.Request {
			r := kmsg.NewPtrDescribeTransactionsRequest()
			r.TransactionalIDs = []string{"someone-elses"}
			return r
		}, kerr.TransactionalIDAuthorizationFailed.Code},
		{"ElectLeaders denied", func() kmsg.Request {
			r := kmsg.NewPtrElectLeadersRequest()
			r.TimeoutMillis = 1000
			return r
		}, kerr.ClusterAuthorizationFailed.Code},
		{"CreateACLs denied", func() kmsg.Request {
			r := kmsg.NewPtrCreateACLsRequest()
			c := kmsg.NewCreateACLsRequestCreation()
			c.ResourceType, c.ResourceName, c.ResourcePatternType = kmsg.ACLResourceTypeTopic, "orders", kmsg.ACLResourcePatternTypeLiteral
			c.Principal, c.Host, c.Operation, c.PermissionType = "User:bob", "*", kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeAllow
			r.Creations = append(r.Creations, c)
			return r
		}, kerr.ClusterAuthorizationFailed.Code},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req()
			resp, err := bob.Request(ctx, req)
			var ke *kerr.Error
			if errors.As(err, &ke) {
				// kgo surfaces some answers (a denied coordinator
				// lookup) as the request's error.
				assert.Equal(t, tt.want, ke.Code, "%v", err)
				return
			}
			require.NoError(t, err)
			got := codes(resp)
			require.NotEmpty(t, got, "no error codes in %T", resp)
			for _, c := range got {
				assert.Equal(t, tt.want, c, "%s: %v", tt.name, kerr.ErrorForCode(c))
			}
		})
	}

	t.Run("ListGroups shows only groups bob may describe", func(t *testing.T) {
		for _, g := range []string{"billing", "payroll"} {
			r := kmsg.NewPtrOffsetCommitRequest()
			r.Group, r.Generation = g, -1
			rt := kmsg.NewOffsetCommitRequestTopic()
			rt.Topic, rt.TopicID = "orders", topicID("orders")
			p := kmsg.NewOffsetCommitRequestTopicPartition()
			p.Offset = 0
			rt.Partitions = append(rt.Partitions, p)
			r.Topics = append(r.Topics, rt)
			resp, err := r.RequestWith(ctx, admin)
			require.NoError(t, err)
			require.Equal(t, int16(0), resp.Topics[0].Partitions[0].ErrorCode)
		}
		shards := bob.RequestSharded(ctx, kmsg.NewPtrListGroupsRequest())
		var groups []string
		for _, s := range shards {
			require.NoError(t, s.Err)
			for _, g := range s.Resp.(*kmsg.ListGroupsResponse).Groups {
				groups = append(groups, g.Group)
			}
		}
		assert.Equal(t, []string{"billing"}, groups)
	})

	t.Run("OffsetCommit mixing allowed and denied topics", func(t *testing.T) {
		r := kmsg.NewPtrOffsetCommitRequest()
		r.Group, r.Generation = "billing", -1
		for _, name := range []string{"orders", "secret"} {
			rt := kmsg.NewOffsetCommitRequestTopic()
			rt.Topic, rt.TopicID = name, topicID(name)
			rt.Partitions = append(rt.Partitions, kmsg.NewOffsetCommitRequestTopicPartition())
			r.Topics = append(r.Topics, rt)
		}
		resp, err := r.RequestWith(ctx, bob)
		require.NoError(t, err)
		got := map[string]int16{}
		for _, rt := range resp.Topics {
			name := rt.Topic
			if name == "" { // v10+ names topics by id only
				var ok bool
				name, ok = e.proxy.Topics().Name(rt.TopicID)
				require.True(t, ok)
			}
			got[name] = rt.Partitions[0].ErrorCode
		}
		assert.Equal(t, map[string]int16{"orders": 0, "secret": kerr.TopicAuthorizationFailed.Code}, got)
	})
}

func TestAuthzRateLimitsFailedLogins(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 5 {
		require.ErrorIs(t, saslClient(t, e, "PLAIN", "alice", "guess").Ping(ctx), kerr.SaslAuthenticationFailed)
	}
	// The right password from the same address is refused for a while.
	err := saslClient(t, e, "PLAIN", "alice", "alice-secret").Ping(ctx)
	require.ErrorIs(t, err, kerr.SaslAuthenticationFailed)
	assert.Contains(t, err.Error(), "too many failed authentications")
}
