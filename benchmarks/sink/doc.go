// Package sink is the benchmark harness's sink broker: a Kafka protocol
// server that accepts Produce and serves Fetch from memory at close to line
// rate, so that when the harness measures a proxy, the proxy is the
// bottleneck and its own cost is visible. kfake serves every request of a
// cluster from one goroutine and saturates first; the sink does not.
//
// It is a real broker for what a benchmark needs, and unmodified clients
// (kgo, sarama, librdkafka/kcat) produce to it and consume from it with
// directly assigned partitions:
//
//   - ApiVersions, Metadata (auto-creating unknown topics), CreateTopics,
//     DeleteTopics, InitProducerID, Produce, Fetch and ListOffsets. Nothing
//     else is advertised; any other request closes the connection with a
//     logged reason.
//   - Produced record batches (magic v2 only) are stored as sent: the sink
//     sets their base offset and partition leader epoch (header fields the
//     CRC does not cover) and never decompresses or rewrites a record, so
//     consumers get back the producer's bytes.
//   - Batches live in per-partition append-only segments. When the total
//     size of all segments passes Config.RetentionBytes the globally oldest
//     segments are dropped and log start offsets advance, as a broker's
//     size-based retention does.
//   - Fetch returns whole stored batches (KIP-74 limits, at least one batch
//     for the first partition with data), long-polls up to MaxWaitMillis,
//     and always answers fetch session id 0, so clients send full fetch
//     requests (KIP-227).
//
// Not implemented: consumer groups and offset commits, transactions,
// sequence checking for idempotent producers (producer ids are handed out
// so idempotent clients work, but duplicates are stored), CRC checks,
// compaction, LogAppendTime, persistence.
//
// Each connection is served by one goroutine in request order, so
// pipelined requests work; partitions are locked one at a time and never
// under a global lock on the produce and fetch paths.
package sink
