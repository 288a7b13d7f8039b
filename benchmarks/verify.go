package benchmarks

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
)

// FNV-1a 64 parameters.
const (
	fnvOffset64 uint64 = 14695981039346656037
	fnvPrime64  uint64 = 1099511628211
)

// fnv1a continues an FNV-1a 64 hash h over b.
func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h
}

// keySize is the size of a record key: the record's index, big-endian.
const keySize = 8

// payloads are the record values of a round: a few pre-generated
// pseudo-random buffers, record i carrying buffer i mod len. Generating them
// once keeps value generation out of the measurement, and knowing which
// buffer a record must carry lets the consumer check every value byte with a
// memory compare instead of hashing it.
type payloads struct {
	bufs [][]byte
	// states[i] is the FNV-1a 64 state after hashing bufs[i], so the hash
	// of value||key costs 8 bytes of hashing per record.
	states []uint64
}

// payloadCount is how many values records of size bytes cycle through: 64,
// fewer for very large records so they stay under about 64 MiB.
func payloadCount(size int) int {
	return max(min(64, (64<<20)/size), 2)
}

// newPayloads generates the values for records of size bytes.
func newPayloads(size int, seed uint64) *payloads {
	n := payloadCount(size)
	rng := rand.New(rand.NewChaCha8([32]byte{0: byte(seed), 1: byte(seed >> 8), 2: byte(seed >> 16)}))
	p := &payloads{bufs: make([][]byte, n), states: make([]uint64, n)}
	for i := range p.bufs {
		b := make([]byte, size)
		for j := 0; j < len(b); j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(b[j:], w[:])
		}
		p.bufs[i] = b
		p.states[i] = fnv1a(fnvOffset64, b)
	}
	return p
}

// value is the value record idx carries.
func (p *payloads) value(idx uint64) []byte { return p.bufs[idx%uint64(len(p.bufs))] }

// hash is the FNV-1a 64 of value||key for record idx with an intact value.
func (p *payloads) hash(idx uint64, key []byte) uint64 {
	return fnv1a(p.states[idx%uint64(len(p.states))], key)
}

// tally is an order-independent digest of a set of records: their count and
// the sum of their FNV-1a 64 hashes of value||key.
type tally struct {
	Count int64
	Sum   uint64
}

// maxProblemExamples bounds the examples a check failure quotes.
const maxProblemExamples = 3

// checker verifies consumed records against what was produced: every index
// from 0 to the produced count exactly once, every value byte-for-byte the
// one produced, offsets on each partition contiguous from 0, and the
// consumed tally equal to the produced one. One checker serves one consumer;
// merge combines them.
type checker struct {
	p        *payloads
	produced int64
	seen     []uint64 // bitset of record indices consumed
	next     map[int32]int64
	got      tally
	bytes    int64

	dups, corrupt, unknown, offsetProblems int64
	examples                               map[string][]string
}

// newChecker checks against produced records 0..produced-1 carrying p.
func newChecker(p *payloads, produced int64) *checker {
	return &checker{
		p:        p,
		produced: produced,
		seen:     make([]uint64, (produced+63)/64),
		next:     make(map[int32]int64),
		examples: make(map[string][]string),
	}
}

func (c *checker) example(kind, format string, args ...any) {
	if len(c.examples[kind]) < maxProblemExamples {
		c.examples[kind] = append(c.examples[kind], fmt.Sprintf(format, args...))
	}
}

// add checks one consumed record.
func (c *checker) add(partition int32, offset int64, key, value []byte) {
	c.got.Count++
	c.bytes += int64(len(key) + len(value))
	if want := c.next[partition]; offset != want {
		c.offsetProblems++
		if offset > want {
			c.example("offset", "partition %d skips offsets %d to %d", partition, want, offset-1)
		} else {
			c.example("offset", "partition %d delivers offset %d again after %d", partition, offset, want-1)
		}
	}
	c.next[partition] = offset + 1

	if len(key) != keySize {
		c.unknown++
		c.example("unknown", "partition %d offset %d has a %d-byte key", partition, offset, len(key))
		c.got.Sum += fnv1a(fnv1a(fnvOffset64, value), key)
		return
	}
	idx := binary.BigEndian.Uint64(key)
	if idx >= uint64(c.produced) {
		c.unknown++
		c.example("unknown", "partition %d offset %d has index %d, beyond the %d produced", partition, offset, idx, c.produced)
		c.got.Sum += fnv1a(fnv1a(fnvOffset64, value), key)
		return
	}
	if w, bit := idx/64, uint64(1)<<(idx%64); c.seen[w]&bit != 0 {
		c.dups++
		c.example("dup", "index %d again at partition %d offset %d", idx, partition, offset)
	} else {
		c.seen[w] |= bit
	}
	if want := c.p.value(idx); string(value) == string(want) {
		c.got.Sum += c.p.hash(idx, key)
	} else {
		c.corrupt++
		c.example("corrupt", "index %d at partition %d offset %d (%d bytes, want %d)", idx, partition, offset, len(value), len(want))
		c.got.Sum += fnv1a(fnv1a(fnvOffset64, value), key)
	}
}

// merge folds o, the checker of another consumer of other partitions, into c.
func (c *checker) merge(o *checker) {
	for i, w := range o.seen {
		if both := c.seen[i] & w; both != 0 {
			for b := range 64 {
				if both&(1<<b) != 0 {
					c.dups++
					c.example("dup", "index %d consumed by two consumers", i*64+b)
				}
			}
		}
		c.seen[i] |= w
	}
	for p, n := range o.next {
		c.next[p] = n
	}
	c.got.Count += o.got.Count
	c.got.Sum += o.got.Sum
	c.bytes += o.bytes
	c.dups += o.dups
	c.corrupt += o.corrupt
	c.unknown += o.unknown
	c.offsetProblems += o.offsetProblems
	for k, v := range o.examples {
		for _, e := range v {
			if len(c.examples[k]) < maxProblemExamples {
				c.examples[k] = append(c.examples[k], e)
			}
		}
	}
}

// missing counts produced indices never consumed and quotes the first few.
func (c *checker) missing() (int64, []string) {
	var n int64
	var first []string
	for idx := range c.produced {
		if c.seen[idx/64]&(1<<(idx%64)) == 0 {
			n++
			if len(first) < maxProblemExamples {
				first = append(first, fmt.Sprintf("index %d", idx))
			}
		}
	}
	return n, first
}

// verify compares what was consumed with the produced tally and returns nil
// only when every record came back once and intact.
func (c *checker) verify(produced tally) error {
	var problems []string
	add := func(n int64, what, kind string, extra []string) {
		if n == 0 {
			return
		}
		ex := append(append([]string(nil), extra...), c.examples[kind]...)
		msg := fmt.Sprintf("%d %s", n, what)
		if len(ex) > 0 {
			msg += " (" + strings.Join(ex, "; ") + ")"
		}
		problems = append(problems, msg)
	}
	lost, firstLost := c.missing()
	add(lost, "record(s) lost", "", firstLost)
	add(c.dups, "duplicate record(s)", "dup", nil)
	add(c.corrupt, "corrupted value(s)", "corrupt", nil)
	add(c.unknown, "record(s) this run never produced", "unknown", nil)
	add(c.offsetProblems, "offset discontinuities", "offset", nil)
	if c.got != produced {
		problems = append(problems, fmt.Sprintf("consumed %d records with checksum %#016x, produced %d with checksum %#016x",
			c.got.Count, c.got.Sum, produced.Count, produced.Sum))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("data check failed: %s", strings.Join(problems, "; "))
}
