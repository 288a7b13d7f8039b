// Package kafkaproxy is pipemesh's Kafka data plane. A client connects to the
// bootstrap listener; every broker the upstream cluster advertises gets a
// listener of its own on a port derived from its node id, and every response
// that names a broker (Metadata, FindCoordinator, DescribeCluster, and the
// KIP-951 leader endpoints of Produce, Fetch, ShareFetch and
// ShareAcknowledge) is rewritten to name those listeners, so the client never
// learns an upstream address.
//
// Each client connection is paired with one upstream connection. Requests are
// forwarded in order as frames; only the header is parsed unless a stage
// needs more. Responses come back in request order with the client's own
// correlation ids, interleaved with the answers the proxy makes itself.
package kafkaproxy
