package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Stream chunks. A chunk's bytes are appended to its job's stream file
// (spill/<job id>.stream) and fsynced; its index record (c/<job id>/<index>)
// holds only where they lie. Chunk bytes so never pass through Badger's LSM
// tree, whose compactions held about as much memory as a flood of 60 KB
// chunks wrote (issue 9), and a stream of any size is read back in bounded
// pages. Handed-out ranges are punched out of the file; the file goes with
// its job's record (SweepSpill).

const streamSuffix = ".stream"

// chunkRefLen is the size of an index record that points into the stream
// file: 0x00, then offset and length as big-endian uint64s. A JSON value
// never starts with 0x00, so chunks that earlier versions kept in the
// record itself are told apart and still read.
const chunkRefLen = 17

func chunkRef(off, n int64) []byte {
	v := make([]byte, chunkRefLen)
	binary.BigEndian.PutUint64(v[1:], uint64(off))
	binary.BigEndian.PutUint64(v[9:], uint64(n))
	return v
}

// parseRef decodes an index record: the chunk's offset in the stream file
// and its size, or at -1 for a chunk kept in the record.
func parseRef(v []byte) (at, size int64) {
	if len(v) == chunkRefLen && v[0] == 0 {
		return int64(binary.BigEndian.Uint64(v[1:])), int64(binary.BigEndian.Uint64(v[9:]))
	}
	return -1, int64(len(v))
}

func (s *Badger) streamPath(jobID string) (string, error) {
	if jobID == "" || strings.ContainsAny(jobID, "/\\") {
		return "", fmt.Errorf("bad job id %q for a stream file", jobID)
	}
	return filepath.Join(s.spillDir, jobID+streamSuffix), nil
}

// PutChunk appends a stream chunk: its bytes to the job's stream file,
// durably before it returns, and its index record to the batch. A failed
// file write fails the batch's commit. A job's chunks must be put one at a
// time (the scheduler serialises a job's posts).
func (b *batch) PutChunk(c Chunk, expiresAt time.Time) {
	if b.err != nil {
		return
	}
	off, err := b.s.appendStream(c.JobID, c.Output)
	if err != nil {
		b.err = err
		return
	}
	b.ops = append(b.ops, op{kind: opSet, key: chunkKey(c.JobID, c.Index), val: chunkRef(off, int64(len(c.Output))), expiresAt: expiry(expiresAt)})
}

// DeleteChunk removes a delivered stream chunk's index record.
func (b *batch) DeleteChunk(jobID string, idx uint64) {
	b.ops = append(b.ops, op{kind: opDelete, key: chunkKey(jobID, idx)})
}

// appendStream appends data to the job's stream file, fdatasyncs it, and
// returns the offset it was written at.
func (s *Badger) appendStream(jobID string, data []byte) (int64, error) {
	path, err := s.streamPath(jobID)
	if err != nil {
		return 0, err
	}
	// The same gate as a Badger write: a stream file that takes the last
	// free blocks would leave the store nothing for its own files.
	if err := s.checkSpace(uint64(len(data))); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return 0, fmt.Errorf("open stream file: %w", err)
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("stream file of job %s: %w", jobID, err)
	}
	if _, err := f.Write(data); err != nil {
		// Cut off what part of the chunk was written: no index record
		// will point at it.
		f.Truncate(off)
		if errors.Is(err, syscall.ENOSPC) {
			free, _ := FreeBytes(s.opts.Dir)
			return 0, &NoSpaceError{Dir: s.opts.Dir, Free: free, Needed: uint64(len(data)), What: "append a stream chunk"}
		}
		return 0, fmt.Errorf("append to the stream file of job %s: %w", jobID, err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("fdatasync the stream file of job %s: %w", jobID, err)
	}
	if off == 0 {
		// A new file: its directory entry must be durable too.
		if err := syncDir(s.spillDir); err != nil {
			return 0, err
		}
	}
	return off, nil
}

// ChunkPage reads a job's stream chunks in index order, starting at index
// from and stopping before index to, until the next chunk would take the
// page past budget bytes; the first chunk is always read, however big. more
// reports that a chunk below to was left for the next page. Sizes come from
// the index records, so a page never reads more than it returns. Chunks
// whose stream file is gone (swept with an expired job) are skipped.
func (s *Badger) ChunkPage(_ context.Context, jobID string, from, to uint64, budget int) (page []Chunk, more bool, err error) {
	prefix := []byte(prefixChunk + jobID + "/")
	err = s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false // a chunk kept in its record may be big: sized first
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
			at, size := int64(-1), item.ValueSize()
			var v []byte
			if size == chunkRefLen {
				var err error
				if v, err = item.ValueCopy(nil); err != nil {
					return fmt.Errorf("chunk %d: %w", idx, err)
				}
				at, size = parseRef(v)
			}
			if len(page) > 0 && total+int(size) > budget {
				more = true
				return nil
			}
			if at < 0 && v == nil {
				var err error
				if v, err = item.ValueCopy(nil); err != nil {
					return fmt.Errorf("chunk %d: %w", idx, err)
				}
			}
			c := Chunk{JobID: jobID, Index: idx, at: at}
			if at < 0 {
				c.Output = json.RawMessage(v)
			} else {
				c.Output = make(json.RawMessage, size)
			}
			total += int(size)
			page = append(page, c)
		}
		return nil
	})
	if err == nil {
		page, err = s.readStream(jobID, page)
	}
	if err != nil {
		return nil, false, fmt.Errorf("read stream chunks of job %s: %w", jobID, err)
	}
	return page, more, nil
}

// readStream fills in the chunks of page that lie in the stream file.
func (s *Badger) readStream(jobID string, page []Chunk) ([]Chunk, error) {
	var f *os.File
	gone := false // swept with its job: its chunks are skipped
	kept := page[:0]
	for _, c := range page {
		if c.at < 0 {
			kept = append(kept, c)
			continue
		}
		if f == nil && !gone {
			path, err := s.streamPath(jobID)
			if err != nil {
				return nil, err
			}
			f, err = os.Open(path)
			switch {
			case errors.Is(err, os.ErrNotExist):
				gone = true
			case err != nil:
				return nil, fmt.Errorf("open stream file: %w", err)
			default:
				defer f.Close()
			}
		}
		if gone {
			continue
		}
		if _, err := f.ReadAt(c.Output, c.at); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", c.Index, err)
		}
		kept = append(kept, c)
	}
	return kept, nil
}

// ReleaseChunks frees the disk space of delivered chunks (after their index
// records were deleted) by punching their ranges out of the stream file. It
// is best effort: the file goes anyway with its job.
func (s *Badger) ReleaseChunks(jobID string, page []Chunk) {
	path, err := s.streamPath(jobID)
	if err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	for _, c := range page {
		if c.at >= 0 && len(c.Output) > 0 {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, c.at, int64(len(c.Output))); err != nil {
				s.log.Debug("punch delivered stream chunks out of their file", "job", jobID, "err", err)
				return
			}
		}
	}
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
// pass over the index records (start-up recovery).
func (s *Badger) ScanChunkSpans(_ context.Context, fn func(jobID string, span ChunkSpan)) error {
	var (
		cur  string
		span ChunkSpan
	)
	err := s.chunkIndex(prefixChunk, func(jobID string, idx uint64, size int64) {
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

// ChunkSpanOf returns where one job's stored stream chunks lie.
func (s *Badger) ChunkSpanOf(_ context.Context, jobID string) (ChunkSpan, error) {
	var span ChunkSpan
	err := s.chunkIndex(prefixChunk+jobID+"/", func(id string, idx uint64, size int64) {
		if id == jobID {
			span.add(idx, size)
		}
	})
	if err != nil {
		return ChunkSpan{}, fmt.Errorf("scan stream chunks of job %s: %w", jobID, err)
	}
	return span, nil
}

// chunkIndex walks the index records under prefix in order, reading only
// the small ones (a chunk kept in its record is sized without reading it).
// Keys sort by job id, then index (big-endian), so a job's chunks are
// consecutive.
func (s *Badger) chunkIndex(prefix string, fn func(jobID string, idx uint64, size int64)) error {
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
			size := item.ValueSize()
			if size == chunkRefLen {
				if err := item.Value(func(v []byte) error { _, size = parseRef(v); return nil }); err != nil {
					return err
				}
			}
			fn(string(k[len(prefixChunk):len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), size)
		}
		return nil
	})
}
