package flightserver

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// manifestFile is the name of a dataset's description in its directory.
const manifestFile = "manifest.json"

// manifest describes one stored dataset: its schema and its chunk files.
type manifest struct {
	Name    string   `json:"name"`
	Path    []string `json:"path"`
	Schema  []byte   `json:"schema"` // the schema message's flatbuffer
	Chunks  []chunk  `json:"chunks"`
	Rows    int64    `json:"rows"`
	Bytes   int64    `json:"bytes"`
	Batches int64    `json:"batches"`
}

// chunk is one Arrow IPC stream file of a dataset, served as one endpoint.
type chunk struct {
	File    string `json:"file"`
	Rows    int64  `json:"rows"`
	Bytes   int64  `json:"bytes"`
	Batches int64  `json:"batches"`
}

// maxNameBytes bounds a dataset name so its directory name stays legal.
const maxNameBytes = 200

// datasetName joins a descriptor path into the dataset's name.
func datasetName(path []string) (string, error) {
	if len(path) == 0 {
		return "", errors.New("the descriptor has an empty path; name the dataset, e.g. path [\"trips\"]")
	}
	for _, p := range path {
		if p == "" {
			return "", fmt.Errorf("descriptor path %q has an empty element", path)
		}
	}
	name := strings.Join(path, "/")
	if len(name) > maxNameBytes {
		return "", fmt.Errorf("dataset name of %d bytes is over the limit of %d", len(name), maxNameBytes)
	}
	return name, nil
}

// dirName is the directory of a dataset under the data directory: the name
// escaped so that no name can step outside it.
func dirName(name string) string {
	d := url.PathEscape(name)
	if d == "." || d == ".." {
		d = strings.ReplaceAll(d, ".", "%2E")
	}
	return d
}

func readManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, manifestFile), err)
	}
	return &m, nil
}

func writeManifest(dir string, m *manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, manifestFile), b, 0o644)
}

// chunkWriter writes the IPC stream of one dataset into chunk files of at
// most batchesPerChunk batches or bytesPerChunk body bytes, each one a
// complete stream that begins with the schema.
type chunkWriter struct {
	dir             string
	batchesPerChunk int64
	bytesPerChunk   int64
	m               *manifest
	f               *os.File
	w               *bufio.Writer
	cur             chunk
	noSplit         bool // a dictionary was seen: keep one chunk so every batch has it
	scratch         []byte
}

var zeros [8]byte

func (c *chunkWriter) writeMessage(meta, body []byte) error {
	c.scratch = arrowipc.AppendPrefix(c.scratch[:0], len(meta))
	if _, err := c.w.Write(c.scratch); err != nil {
		return err
	}
	if _, err := c.w.Write(meta); err != nil {
		return err
	}
	if _, err := c.w.Write(zeros[:arrowipc.Padding(len(meta))]); err != nil {
		return err
	}
	_, err := c.w.Write(body)
	return err
}

// add writes one message (not the schema, which each chunk gets itself).
func (c *chunkWriter) add(meta []byte, h arrowipc.Header, body []byte) error {
	if h.Kind == arrowipc.KindDictionaryBatch {
		c.noSplit = true
	}
	if c.f == nil {
		if err := c.open(); err != nil {
			return err
		}
	}
	if err := c.writeMessage(meta, body); err != nil {
		return fmt.Errorf("writing %s: %w", c.f.Name(), err)
	}
	c.cur.Bytes += int64(len(meta) + len(body))
	if h.Kind == arrowipc.KindRecordBatch {
		c.cur.Rows += h.Rows
		c.cur.Batches++
		if !c.noSplit && (c.cur.Batches >= c.batchesPerChunk || c.cur.Bytes >= c.bytesPerChunk) {
			return c.closeChunk()
		}
	}
	return nil
}

func (c *chunkWriter) open() error {
	c.cur = chunk{File: fmt.Sprintf("chunk-%06d.arrows", len(c.m.Chunks))}
	f, err := os.Create(filepath.Join(c.dir, c.cur.File))
	if err != nil {
		return err
	}
	c.f, c.w = f, bufio.NewWriterSize(f, 1<<20)
	return c.writeMessage(c.m.Schema, nil)
}

func (c *chunkWriter) closeChunk() error {
	if c.f == nil {
		return nil
	}
	_, err := c.w.Write(arrowipc.EndOfStream)
	if err == nil {
		err = c.w.Flush()
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	c.f = nil
	if err != nil {
		return fmt.Errorf("writing chunk %s: %w", c.cur.File, err)
	}
	c.m.Chunks = append(c.m.Chunks, c.cur)
	c.m.Rows += c.cur.Rows
	c.m.Bytes += c.cur.Bytes
	c.m.Batches += c.cur.Batches
	return nil
}

// finish closes the last chunk; a dataset of no batches still gets one
// (schema-only) chunk so that readers see its schema.
func (c *chunkWriter) finish() error {
	if c.f == nil && len(c.m.Chunks) == 0 {
		if err := c.open(); err != nil {
			return err
		}
	}
	return c.closeChunk()
}

// abort closes an open chunk after a failure; the caller removes the directory.
func (c *chunkWriter) abort() {
	if c.f != nil {
		_ = c.f.Close()
		c.f = nil
	}
}
