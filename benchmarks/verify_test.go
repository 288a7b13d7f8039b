package benchmarks

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkRecord is one record as a consumer sees it.
type checkRecord struct {
	partition int32
	offset    int64
	key       []byte
	value     []byte
}

// producedSet makes n records over partitions the way the producers do (key
// = index, value = payload of the index) with the produced tally, and
// offsets as a broker assigns them.
func producedSet(p *payloads, n int64, partitions int32) ([]checkRecord, tally) {
	var recs []checkRecord
	var t tally
	next := map[int32]int64{}
	for i := range n {
		key := make([]byte, keySize)
		binary.BigEndian.PutUint64(key, uint64(i))
		part := int32(i) % partitions
		recs = append(recs, checkRecord{part, next[part], key, p.value(uint64(i))})
		next[part]++
		t.Count++
		t.Sum += p.hash(uint64(i), key)
	}
	return recs, t
}

// reoffset renumbers offsets per partition in order, as a broker would for
// the records it actually holds.
func reoffset(recs []checkRecord) []checkRecord {
	next := map[int32]int64{}
	out := make([]checkRecord, len(recs))
	for i, r := range recs {
		r.offset = next[r.partition]
		next[r.partition]++
		out[i] = r
	}
	return out
}

func TestCheckerHashIsFNV1aOfValueThenKey(t *testing.T) {
	p := newPayloads(100, 1)
	key := []byte{0, 0, 0, 0, 0, 0, 0, 7}
	want := fnv1a(fnvOffset64, append(append([]byte(nil), p.value(7)...), key...))
	assert.Equal(t, want, p.hash(7, key))
	// Known FNV-1a 64 vector.
	assert.Equal(t, uint64(0xaf63dc4c8601ec8c), fnv1a(fnvOffset64, []byte("a")))
}

func TestPayloadsAreDistinctAndSized(t *testing.T) {
	p := newPayloads(1000, 3)
	require.Len(t, p.bufs, 64)
	assert.Len(t, p.value(5), 1000)
	assert.NotEqual(t, p.value(0), p.value(1))
	assert.Equal(t, p.value(1), p.value(65))
	assert.Equal(t, 64, payloadCount(256<<10))
	assert.Equal(t, 4, payloadCount(16<<20), "at most about 64 MiB of values")
	assert.Equal(t, 2, payloadCount(1<<30))
}

func TestCheckerFindsLossDuplicatesAndCorruption(t *testing.T) {
	p := newPayloads(64, 9)
	const n = 200
	base, produced := producedSet(p, n, 3)
	corrupt := func(r checkRecord) checkRecord {
		v := append([]byte(nil), r.value...)
		v[10] ^= 0xff
		r.value = v
		return r
	}
	tests := []struct {
		name     string
		consumed func() []checkRecord
		wantErr  []string
	}{
		{"all back intact, any order", func() []checkRecord {
			// Partitions interleave differently, offsets stay in order.
			var out []checkRecord
			for part := int32(2); part >= 0; part-- {
				for _, r := range base {
					if r.partition == part {
						out = append(out, r)
					}
				}
			}
			return out
		}, nil},
		{"one record lost", func() []checkRecord {
			return reoffset(append(append([]checkRecord(nil), base[:50]...), base[51:]...))
		}, []string{"1 record(s) lost (index 50)", "consumed 199 records"}},
		{"one record duplicated, one lost", func() []checkRecord {
			out := append([]checkRecord(nil), base[:n-1]...)
			dup := base[7]
			dup.partition = base[n-1].partition
			return reoffset(append(out, dup))
		}, []string{"1 record(s) lost (index 199)", "1 duplicate record(s) (index 7 again at partition", "checksum"}},
		{"one record duplicated", func() []checkRecord {
			return reoffset(append(append([]checkRecord(nil), base...), base[3]))
		}, []string{"1 duplicate record(s) (index 3 again", "consumed 201 records"}},
		{"one value corrupted", func() []checkRecord {
			out := append([]checkRecord(nil), base...)
			out[42] = corrupt(out[42])
			return out
		}, []string{"1 corrupted value(s) (index 42 at partition 0 offset 14", "checksum"}},
		{"one value truncated", func() []checkRecord {
			out := append([]checkRecord(nil), base...)
			out[42].value = out[42].value[:10]
			return out
		}, []string{"1 corrupted value(s) (index 42 at partition 0 offset 14 (10 bytes, want 64))"}},
		{"a gap in the offsets", func() []checkRecord {
			out := append([]checkRecord(nil), base...)
			for i := range out {
				if out[i].partition == 1 && out[i].offset >= 5 {
					out[i].offset++
				}
			}
			return out
		}, []string{"1 offset discontinuities (partition 1 skips offsets 5 to 5)"}},
		{"a record from elsewhere", func() []checkRecord {
			out := append([]checkRecord(nil), base[:n-1]...)
			last := base[n-1]
			last.key = []byte("stranger")
			return append(out, last)
		}, []string{"1 record(s) lost (index 199)", "1 record(s) this run never produced (partition"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChecker(p, n)
			for _, r := range tt.consumed() {
				c.add(r.partition, r.offset, r.key, r.value)
			}
			err := c.verify(produced)
			if tt.wantErr == nil {
				require.NoError(t, err)
				assert.Equal(t, produced, c.got)
				assert.Equal(t, int64(n*(64+keySize)), c.bytes)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "data check failed: ")
			for _, w := range tt.wantErr {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestCheckerMergesConsumers(t *testing.T) {
	p := newPayloads(32, 2)
	base, produced := producedSet(p, 100, 4)
	a, b := newChecker(p, 100), newChecker(p, 100)
	for _, r := range base {
		if r.partition%2 == 0 {
			a.add(r.partition, r.offset, r.key, r.value)
		} else {
			b.add(r.partition, r.offset, r.key, r.value)
		}
	}
	all := newChecker(p, 100)
	all.merge(a)
	all.merge(b)
	require.NoError(t, all.verify(produced))

	// The same record consumed by two consumers is a duplicate.
	c := newChecker(p, 100)
	r := base[0]
	c.add(r.partition+10, 0, r.key, r.value)
	all.merge(c)
	err := all.verify(produced)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 duplicate record(s) (index 0 consumed by two consumers)")
}
