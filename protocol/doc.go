// Package protocol holds the parts of the Kafka wire protocol that pipemesh
// reads on the hot path without decoding whole messages: frame sizes, request
// and response headers, the flexible-version table (KIP-482), the position of
// acks in Produce requests, and structural walks over Produce and Fetch
// responses that find the KIP-951 leader endpoints without touching record
// bytes.
//
// Whole messages are decoded and encoded with franz-go's kmsg, never with a
// second codec; this package only skips over what kmsg would decode, using
// franz-go's sticky-error kbin.Reader. It opens no sockets.
package protocol
