package lineage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The graph's file: one bbolt database (a single file, B+tree, ACID
// transactions, one writer) under the data dir. Each node and each edge is
// one key, so a persist writes what changed, not the whole graph.
const (
	storeFile     = "lineage.db"
	schemaVersion = "1"
)

var (
	bucketMeta  = []byte("meta")
	bucketNodes = []byte("nodes")
	bucketEdges = []byte("edges")
)

type store struct {
	db *bolt.DB
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lineage: creating data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, storeFile)
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("lineage: %s is locked by another process; give each pipemesh its own --data-dir", path)
		}
		return nil, fmt.Errorf("lineage: opening %s: %w (move the file away to start an empty graph)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get([]byte("schema")); v != nil && string(v) != schemaVersion {
			return fmt.Errorf("schema version %q, this pipemesh reads %q", v, schemaVersion)
		}
		if err := meta.Put([]byte("schema"), []byte(schemaVersion)); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketNodes, bucketEdges} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("lineage: preparing %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func edgeKey(id edgeID) []byte {
	return []byte(id.from + "\x00" + id.to + "\x00" + string(id.typ))
}

// load reads every node and edge. A record that does not decode is skipped
// with the rest kept: one bad key must not lose the whole graph.
func (s *store) load(nodes map[string]*Node, edges map[edgeID]*edge) error {
	return s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var n Node
			if json.Unmarshal(v, &n) == nil && n.ID == string(k) {
				nodes[n.ID] = &n
			}
			return nil
		}); err != nil {
			return fmt.Errorf("lineage: reading nodes: %w", err)
		}
		return tx.Bucket(bucketEdges).ForEach(func(k, v []byte) error {
			var e Edge
			if json.Unmarshal(v, &e) != nil {
				return nil
			}
			id := edgeID{e.From, e.To, e.Type}
			if string(edgeKey(id)) != string(k) || nodes[e.From] == nil || nodes[e.To] == nil {
				return nil
			}
			e.BytesPerSecond, e.RecordsPerSecond = 0, 0
			edges[id] = &edge{Edge: e}
			return nil
		})
	})
}

func (s *store) save(nodes []Node, edges []Edge, goneNodes []string, goneEdges []edgeID) error {
	if len(nodes)+len(edges)+len(goneNodes)+len(goneEdges) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		nb, eb := tx.Bucket(bucketNodes), tx.Bucket(bucketEdges)
		for _, n := range nodes {
			n.BytesInPerSecond, n.BytesOutPerSecond, n.RecordsInPerSecond, n.RecordsOutPerSecond = 0, 0, 0, 0
			v, err := json.Marshal(n)
			if err != nil {
				return err
			}
			if err := nb.Put([]byte(n.ID), v); err != nil {
				return fmt.Errorf("lineage: saving node %s: %w", n.ID, err)
			}
		}
		for _, e := range edges {
			e.BytesPerSecond, e.RecordsPerSecond = 0, 0
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := eb.Put(edgeKey(edgeID{e.From, e.To, e.Type}), v); err != nil {
				return fmt.Errorf("lineage: saving edge %s -> %s: %w", e.From, e.To, err)
			}
		}
		for _, id := range goneNodes {
			if err := nb.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for _, id := range goneEdges {
			if err := eb.Delete(edgeKey(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *store) close() error { return s.db.Close() }
