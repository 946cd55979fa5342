package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// ChunkPage reads a job's stream chunks in index order, starting at index
// from and stopping before index to, until the next chunk would take the
// page past budget bytes; the first chunk is always read, however big. more
// reports that a chunk below to was left for the next page. Sizes are
// checked before values are read, so a page never loads more than it
// returns: a stream of any length is read in bounded steps.
func (s *Store) ChunkPage(jobID string, from, to uint64, budget int) (page []Chunk, more bool, err error) {
	prefix := []byte(prefixChunk + jobID + "/")
	err = s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false // values are read one by one, within the budget
		it := txn.NewIterator(o)
		defer it.Close()
		total := 0
		for it.Seek(chunkKey(jobID, from)); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			idx := binary.BigEndian.Uint64(k[len(prefix):])
			if idx >= to {
				return nil
			}
			size := int(item.ValueSize())
			if len(page) > 0 && total+size > budget {
				more = true
				return nil
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("chunk %d: %w", idx, err)
			}
			total += len(v)
			page = append(page, Chunk{JobID: jobID, Index: idx, Output: json.RawMessage(v)})
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read stream chunks of job %s: %w", jobID, err)
	}
	return page, more, nil
}

// ChunkSpan is where a job's stored stream chunks lie: indexes First to
// Next-1 (those not yet deleted), Bytes in all. The zero value is no chunks.
type ChunkSpan struct {
	First, Next uint64
	Bytes       int64
}

func (c *ChunkSpan) add(idx uint64, size int64) {
	if c.Next == 0 || idx < c.First {
		c.First = idx
	}
	if idx >= c.Next {
		c.Next = idx + 1
	}
	c.Bytes += size
}

// ScanChunkSpans calls fn once for every job that has stream chunks, in one
// pass over the chunk keys that reads no values (start-up recovery). Bytes
// is exact for chunks kept in the tree and within a few bytes for the big
// ones kept in the value log.
func (s *Store) ScanChunkSpans(fn func(jobID string, span ChunkSpan)) error {
	var (
		cur  string
		span ChunkSpan
	)
	err := s.chunkKeys(prefixChunk, func(jobID string, idx uint64, size int64) {
		if jobID != cur && span.Next > 0 {
			fn(cur, span)
			span = ChunkSpan{}
		}
		cur = jobID
		span.add(idx, size)
	})
	if err != nil {
		return fmt.Errorf("scan stream chunks: %w", err)
	}
	if span.Next > 0 {
		fn(cur, span)
	}
	return nil
}

// ChunkSpanOf returns where one job's stored stream chunks lie, reading keys
// only.
func (s *Store) ChunkSpanOf(jobID string) (ChunkSpan, error) {
	var span ChunkSpan
	err := s.chunkKeys(prefixChunk+jobID+"/", func(id string, idx uint64, size int64) {
		if id == jobID {
			span.add(idx, size)
		}
	})
	if err != nil {
		return ChunkSpan{}, fmt.Errorf("scan stream chunks of job %s: %w", jobID, err)
	}
	return span, nil
}

// chunkKeys walks the chunk keys under prefix in order, without values.
// Keys sort by job id, then index (big-endian), so a job's chunks are
// consecutive.
func (s *Store) chunkKeys(prefix string, fn func(jobID string, idx uint64, size int64)) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte(prefix)
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			// c/<job id>/<8-byte index>
			if len(k) < len(prefixChunk)+1+8 || k[len(k)-9] != '/' {
				continue
			}
			fn(string(k[len(prefixChunk):len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), item.ValueSize())
		}
		return nil
	})
}
