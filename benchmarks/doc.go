// Package benchmarks is pipemesh's throughput harness: it measures what the
// mesh costs by running the same Kafka workload direct to the brokers and
// through the proxy, alternating A B A B so drift on a shared machine
// cancels, and checks on every round that every record came back.
//
// The harness speaks only Kafka (franz-go's kgo), so it measures any cluster
// and any proxy. Embedded, it starts its own upstream, kfake or the sink
// broker of package sink, and a pipemesh proxy as child processes, so the CPU
// each one spends is its own.
package benchmarks
