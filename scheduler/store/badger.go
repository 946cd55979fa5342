package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Key prefixes. One byte plus a slash keeps keys short and prefixes disjoint.
const (
	prefixEndpoint = "e/"
	prefixJob      = "j/"
	prefixChunk    = "c/"
	prefixDelivery = "w/"
	prefixWorker   = "k/"
)

// BadgerOptions configures a Badger store.
type BadgerOptions struct {
	// Dir holds the Badger files; spilled payloads go to Dir/spill.
	Dir string
	// InMemory keeps everything in memory (unit tests only: no durability).
	InMemory bool
	// SpillThreshold is the payload size above which inputs and outputs are
	// written to their own files instead of into the record. Badger keeps
	// values under its value threshold in the LSM tree; big values bloat the
	// value log and its GC, so they live outside it.
	SpillThreshold int
	// MaxBatchOps bounds how many operations one group commit may carry.
	MaxBatchOps int
	// LazyDelay bounds how long an asynchronous write waits for a durable
	// one to share its fsync (default 5 ms).
	LazyDelay time.Duration
	// Reserve is the free space (bytes) that no write may take: below it
	// the store refuses writes with a *NoSpaceError instead of letting
	// Badger fault on a full disk (space.go). Zero: DefaultReserve.
	Reserve uint64
	Logger  *slog.Logger

	// unguarded turns the disk-space rules off (the baseline of the store
	// benchmark; package tests only).
	unguarded bool
}

// Badger is the Store on one machine's disk, in Badger (an LSM tree with a
// value log) under Dir/badger, with big payloads and stream chunks in files
// under Dir/spill. Writes go through a single committer goroutine that
// groups concurrent writers into one Badger transaction, so many
// submitters share one fsync.
type Badger struct {
	db       *badger.DB
	spillDir string
	opts     BadgerOptions
	log      *slog.Logger

	reqs     chan *commitReq
	stopOnce sync.Once
	stopped  chan struct{} // closed when the committer has exited
	closing  chan struct{}
	mu       sync.RWMutex // guards closed against concurrent Commit/Close
	closed   bool

	// The committer's record of the write-ahead log it has allocated.
	walBacked   string
	walDirMtime time.Time
	walWarned   bool
	// noBallast is set when the reserve file is missing (released, or
	// never allocated); the committer allocates it once there is room.
	noBallast bool
}

// Badger sizes that the disk-space rules depend on (space.go).
const (
	memTableSize     = 8 << 20
	valueLogFileSize = 64 << 20
)

var _ Store = (*Badger)(nil)

// OpenBadger opens (or creates) the store in opts.Dir. It fails with a
// *NoSpaceError while the disk has no room to open Badger (space.go).
func OpenBadger(opts BadgerOptions) (*Badger, error) {
	if opts.SpillThreshold <= 0 {
		opts.SpillThreshold = 64 << 10
	}
	if opts.MaxBatchOps <= 0 {
		opts.MaxBatchOps = 2048
	}
	if opts.LazyDelay <= 0 {
		opts.LazyDelay = 5 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Reserve == 0 {
		opts.Reserve = DefaultReserve
	}
	bo := badger.DefaultOptions(filepath.Join(opts.Dir, "badger")).
		WithSyncWrites(true).
		WithLogger(badgerLogger{opts.Logger}).
		// Small-memory settings measured in notes/stack.md (~125 MB peak
		// under write load instead of ~210 MB).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(2).
		WithValueThreshold(int64(opts.SpillThreshold) + 4096)
	if opts.InMemory {
		bo = bo.WithDir("").WithValueDir("").WithInMemory(true)
	}
	if opts.InMemory && opts.Dir == "" {
		// Spilled payloads still need a directory; keep it out of the cwd.
		d, err := os.MkdirTemp("", "ember-spill-")
		if err != nil {
			return nil, fmt.Errorf("create spill dir: %w", err)
		}
		opts.Dir = d
	}
	spillDir := filepath.Join(opts.Dir, "spill")
	if err := os.MkdirAll(spillDir, 0o750); err != nil {
		return nil, fmt.Errorf("create spill dir: %w", err)
	}
	s := &Badger{
		spillDir: spillDir,
		opts:     opts,
		log:      opts.Logger,
		reqs:     make(chan *commitReq, 4096),
		stopped:  make(chan struct{}),
		closing:  make(chan struct{}),
	}
	// Opening writes (new mapped files, a flush of the last run's logs):
	// on a disk without room for that it would fault, so it waits.
	if err := s.makeRoom(openNeeds(opts.Dir), "open the job store"); err != nil {
		return nil, err
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", opts.Dir, err)
	}
	s.db = db
	s.backWAL()
	s.ensureBallast()
	go s.committer()
	return s, nil
}

// Close stops the committer after it has written everything queued, then
// closes Badger.
func (s *Badger) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	<-s.stopped
	// Closing flushes the memtable into a new table file, which would
	// fault on a full disk. Everything committed is already in the fsynced
	// write-ahead log, so without room the store is left as a crash would
	// leave it, and the next start replays the log.
	if err := s.makeRoom(s.opts.Reserve, "close the job store"); err != nil {
		s.log.Error("job store left unclosed: the disk is full; its write-ahead log is replayed at the next start", "err", err)
		return err
	}
	return s.db.Close()
}

// ---- writes ----

type opKind uint8

const (
	opSet opKind = iota
	opDelete
)

type op struct {
	kind      opKind
	key       []byte
	val       []byte
	expiresAt uint64 // Unix seconds; 0 = never
}

// batch is the Badger store's Batch: operations on keys, encoded when
// they are added, with big payloads already written to their files.
type batch struct {
	s   *Badger
	ops []op
	// err is a failed file write of a method that returns nothing
	// (PutChunk); committing the batch returns it and writes nothing.
	err error
}

// NewBatch starts an empty batch.
func (s *Badger) NewBatch() Batch { return &batch{s: s} }

// Len is the number of operations in the batch.
func (b *batch) Len() int { return len(b.ops) }

func expiry(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++ // never expire early
	}
	if sec <= 0 {
		return 1
	}
	return uint64(sec)
}

// PutJob writes j, spilling big payloads to files first (fsynced, so the
// record never points at a file that a crash lost). The record expires at
// expiresAt (zero: never); Badger then hides it, which is how result
// retention and TTL survive restarts without a sweep over all jobs.
func (b *batch) PutJob(j *Job, expiresAt time.Time) error {
	rec := *j
	if len(rec.Input) > b.s.opts.SpillThreshold {
		name := rec.ID + ".in"
		if err := b.s.writeSpill(name, rec.Input); err != nil {
			return err
		}
		rec.Input, rec.InputRef = nil, name
	}
	if len(rec.Output) > b.s.opts.SpillThreshold {
		name := rec.ID + ".out"
		if err := b.s.writeSpill(name, rec.Output); err != nil {
			return err
		}
		rec.Output, rec.OutputRef = nil, name
	}
	val, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	b.ops = append(b.ops, op{kind: opSet, key: []byte(prefixJob + j.ID), val: val, expiresAt: expiry(expiresAt)})
	return nil
}

// DeleteJob removes a job record. Its spill files are reclaimed by the sweep.
func (b *batch) DeleteJob(id string) {
	b.ops = append(b.ops, op{kind: opDelete, key: []byte(prefixJob + id)})
}

func chunkKey(jobID string, idx uint64) []byte {
	k := make([]byte, 0, len(prefixChunk)+len(jobID)+1+8)
	k = append(k, prefixChunk...)
	k = append(k, jobID...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, idx)
}

// PutEndpoint writes an endpoint definition.
func (b *batch) PutEndpoint(e *Endpoint) error {
	val, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode endpoint %s: %w", e.ID, err)
	}
	b.ops = append(b.ops, op{kind: opSet, key: []byte(prefixEndpoint + e.ID), val: val})
	return nil
}

// DeleteEndpoint removes an endpoint definition.
func (b *batch) DeleteEndpoint(id string) {
	b.ops = append(b.ops, op{kind: opDelete, key: []byte(prefixEndpoint + id)})
}

func deliveryKey(d *Delivery) []byte {
	return []byte(prefixDelivery + d.JobID)
}

// PutDelivery queues or updates a webhook delivery. A job has at most one
// pending delivery: a retried job that turns terminal again replaces it.
func (b *batch) PutDelivery(d *Delivery) error {
	val, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery for %s: %w", d.JobID, err)
	}
	b.ops = append(b.ops, op{kind: opSet, key: deliveryKey(d), val: val})
	return nil
}

// DeleteDelivery removes a finished webhook delivery.
func (b *batch) DeleteDelivery(jobID string) {
	b.ops = append(b.ops, op{kind: opDelete, key: []byte(prefixDelivery + jobID)})
}

// PutWorker remembers a running worker.
func (b *batch) PutWorker(w *WorkerRecord) error {
	val, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encode worker %s: %w", w.ID, err)
	}
	b.ops = append(b.ops, op{kind: opSet, key: []byte(prefixWorker + w.ID), val: val})
	return nil
}

// DeleteWorker forgets a worker that has stopped.
func (b *batch) DeleteWorker(id string) {
	b.ops = append(b.ops, op{kind: opDelete, key: []byte(prefixWorker + id)})
}

// Workers returns the remembered workers.
func (s *Badger) Workers(context.Context) ([]WorkerRecord, error) {
	var out []WorkerRecord
	err := s.scan(prefixWorker, func(_ []byte, v []byte) error {
		var w WorkerRecord
		if err := json.Unmarshal(v, &w); err != nil {
			return fmt.Errorf("decode worker record: %w", err)
		}
		out = append(out, w)
		return nil
	})
	return out, err
}

type commitReq struct {
	ops  []op
	done chan error // nil for asynchronous commits
	// lazy requests are held until a durable request comes (or LazyDelay
	// passes) and written in its transaction: they cost no fsync of their
	// own.
	lazy bool
}

// Commit writes the batch durably: when it returns nil the data has been
// fsynced. Concurrent Commits share one transaction and one fsync.
func (s *Badger) Commit(ctx context.Context, b Batch) error {
	done := s.CommitLater(b)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The write may still land; callers treat this like any other
		// unacknowledged request.
		return ctx.Err()
	}
}

// CommitLater queues the batch behind every earlier commit and returns a
// channel that yields its outcome once it is durable. Work that must only
// follow the write in the store (not in time) can go ahead meanwhile: every
// later commit lands after this one.
func (s *Badger) CommitLater(b Batch) <-chan error {
	bb, err := s.own(b)
	if err == nil {
		err = bb.err
	}
	req := &commitReq{done: make(chan error, 1)}
	if err != nil {
		req.done <- err
		return req.done
	}
	req.ops = bb.ops
	if len(req.ops) == 0 {
		req.done <- nil
		return req.done
	}
	if err := s.enqueue(context.Background(), req); err != nil {
		req.done <- err
	}
	return req.done
}

// CommitAsync queues the batch behind every earlier commit and returns at
// once. The batch is written together with the next durable commit, or on
// its own within LazyDelay, so it costs no fsync of its own; a crash may lose
// it. Used for writes whose loss is harmless (a lease record: the job is
// re-queued either way) or that are made durable later by Flush.
func (s *Badger) CommitAsync(b Batch) {
	bb, err := s.own(b)
	if err == nil {
		err = bb.err
	}
	if err != nil {
		s.log.Error("asynchronous store write dropped", "err", err)
		return
	}
	if len(bb.ops) == 0 {
		return
	}
	_ = s.enqueue(context.Background(), &commitReq{ops: bb.ops, lazy: true})
}

// own returns b as this store's batch: a batch of another store holds
// keys and payload files that are not this one's.
func (s *Badger) own(b Batch) (*batch, error) {
	bb, ok := b.(*batch)
	if !ok || bb.s != s {
		return nil, fmt.Errorf("commit a batch of another store (%T)", b)
	}
	return bb, nil
}

// Flush makes everything queued so far durable.
func (s *Badger) Flush(ctx context.Context) error {
	req := &commitReq{done: make(chan error, 1)}
	if err := s.enqueue(ctx, req); err != nil {
		return err
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Badger) enqueue(ctx context.Context, req *commitReq) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// committer is the single writer. It drains whatever requests are waiting
// into one transaction, so the fsync cost is shared by all of them. Lazy
// requests wait for the next durable one (or LazyDelay) and go into its
// transaction; order is kept, so a later write of a key always wins.
func (s *Badger) committer() {
	defer close(s.stopped)
	var (
		group   []*commitReq
		lazy    []*commitReq
		lazyOps int
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		group = group[:0]
		select {
		case r := <-s.reqs:
			if r.lazy {
				if len(lazy) == 0 {
					timer.Reset(s.opts.LazyDelay)
				}
				lazy = append(lazy, r)
				lazyOps += len(r.ops)
				if lazyOps < s.opts.MaxBatchOps {
					continue
				}
			} else {
				group = append(group, lazy...)
				group = append(group, r)
			}
		case <-timer.C:
			if len(lazy) == 0 {
				continue
			}
		case <-s.closing:
			// Write what is held and what is already queued, then stop.
			for {
				select {
				case r := <-s.reqs:
					lazy = append(lazy, r)
				default:
					s.apply(lazy)
					return
				}
			}
		}
		if len(group) == 0 {
			// The lazy requests alone: the delay passed or they grew large.
			group = append(group, lazy...)
		}
		lazy, lazyOps = lazy[:0], 0
		timer.Stop()
		n := 0
		for _, r := range group {
			n += len(r.ops)
		}
	fill:
		for n < s.opts.MaxBatchOps {
			select {
			case r := <-s.reqs:
				group = append(group, r)
				n += len(r.ops)
			default:
				break fill
			}
		}
		s.apply(group)
	}
}

func (s *Badger) apply(group []*commitReq) {
	err := s.writeOps(group)
	for _, r := range group {
		if r.done != nil {
			r.done <- err
		} else if err != nil {
			s.log.Error("asynchronous store write failed", "err", err)
		}
	}
}

func (s *Badger) writeOps(group []*commitReq) error {
	n := 0
	for _, r := range group {
		n += len(r.ops)
	}
	if n == 0 {
		return nil // a Flush with nothing held: everything earlier is durable
	}
	if err := s.checkSpace(opsBytes(group)); err != nil {
		return err
	}
	defer s.afterCommit()
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, r := range group {
		for _, o := range r.ops {
			err := s.setOp(txn, o)
			if errors.Is(err, badger.ErrTxnTooBig) {
				if err := txn.Commit(); err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				txn = s.db.NewTransaction(true)
				err = s.setOp(txn, o)
			}
			if err != nil {
				return fmt.Errorf("write %q: %w", o.key, err)
			}
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s *Badger) setOp(txn *badger.Txn, o op) error {
	if o.kind == opDelete {
		return txn.Delete(o.key)
	}
	e := badger.NewEntry(o.key, o.val)
	e.ExpiresAt = o.expiresAt
	return txn.SetEntry(e)
}

// ---- spill files ----

func (s *Badger) writeSpill(name string, data []byte) error {
	path := filepath.Join(s.spillDir, name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("spill %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		if errors.Is(err, syscall.ENOSPC) {
			free, _ := FreeBytes(s.opts.Dir)
			return &NoSpaceError{Dir: s.opts.Dir, Free: free, Needed: uint64(len(data)), What: "write a payload file"}
		}
		return fmt.Errorf("spill %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("spill %s: fsync: %w", name, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spill %s: %w", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("spill %s: %w", name, err)
	}
	return syncDir(s.spillDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

func (s *Badger) readSpill(name string) ([]byte, error) {
	if strings.ContainsAny(name, "/\\") {
		return nil, fmt.Errorf("bad spill reference %q", name)
	}
	b, err := os.ReadFile(filepath.Join(s.spillDir, name))
	if err != nil {
		return nil, fmt.Errorf("read spilled payload: %w", err)
	}
	return b, nil
}

// ---- reads ----

// Job reads one job record. With payloads set, spilled input and output are
// loaded back into the record.
func (s *Badger) Job(_ context.Context, id string, payloads bool) (*Job, error) {
	var j Job
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(prefixJob + id))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &j) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	if payloads {
		if err := s.loadPayloads(&j); err != nil {
			return nil, err
		}
	}
	return &j, nil
}

func (s *Badger) loadPayloads(j *Job) error {
	if j.InputRef != "" {
		b, err := s.readSpill(j.InputRef)
		if err != nil {
			return err
		}
		j.Input, j.InputRef = b, ""
	}
	if j.OutputRef != "" {
		b, err := s.readSpill(j.OutputRef)
		if err != nil {
			return err
		}
		j.Output, j.OutputRef = b, ""
	}
	return nil
}

// ScanJobs calls fn for every live job record in one pass over the job
// prefix. Spilled payloads are not loaded. It is meant for start-up recovery:
// the caller rebuilds its in-memory queues from this single scan.
func (s *Badger) ScanJobs(_ context.Context, fn func(*Job) error) error {
	return s.scan(prefixJob, func(_ []byte, v []byte) error {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			return fmt.Errorf("decode job record: %w", err)
		}
		return fn(&j)
	})
}

// Endpoints returns every endpoint definition.
func (s *Badger) Endpoints(context.Context) ([]Endpoint, error) {
	var out []Endpoint
	err := s.scan(prefixEndpoint, func(_ []byte, v []byte) error {
		var e Endpoint
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode endpoint record: %w", err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// Deliveries returns every pending webhook delivery.
func (s *Badger) Deliveries(context.Context) ([]Delivery, error) {
	var out []Delivery
	err := s.scan(prefixDelivery, func(_ []byte, v []byte) error {
		var d Delivery
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("decode delivery record: %w", err)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

func (s *Badger) scan(prefix string, fn func(k, v []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte(prefix)
		o.PrefetchSize = 256
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- maintenance ----

// Maintain runs value-log GC and the spill-file sweep every interval until
// ctx ends. The caller owns the goroutine.
func (s *Badger) Maintain(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.RunGC()
			if n, err := s.SweepSpill(time.Minute); err != nil {
				s.log.Warn("spill sweep failed", "err", err)
			} else if n > 0 {
				s.log.Debug("spill sweep", "removed", n)
			}
		}
	}
}

// RunGC rewrites value-log files until Badger reports nothing left to
// reclaim. Each call handles at most one file, hence the loop.
func (s *Badger) RunGC() int {
	n := 0
	for n < 100 && s.gcRoom() {
		if err := s.db.RunValueLogGC(0.5); err != nil {
			break
		}
		n++
	}
	return n
}

// SweepSpill removes spill files whose job record no longer exists (expired
// or deleted) and that are older than minAge, which protects files written
// for a record that is still being committed.
func (s *Badger) SweepSpill(minAge time.Duration) (int, error) {
	entries, err := os.ReadDir(s.spillDir)
	if err != nil {
		return 0, fmt.Errorf("read spill dir: %w", err)
	}
	removed := 0
	for _, e := range entries {
		name := e.Name()
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < minAge {
			continue
		}
		stream := strings.HasSuffix(name, streamSuffix)
		id := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, ".tmp"), ".in"), ".out"), streamSuffix)
		j, err := s.Job(context.Background(), id, false)
		if err == nil && (j.InputRef == name || j.OutputRef == name || stream) {
			continue // a stream file lives as long as its job's record
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return removed, err
		}
		if err := os.Remove(filepath.Join(s.spillDir, name)); err == nil {
			removed++
		}
	}
	return removed, nil
}

// badgerLogger routes Badger's printf logging into slog, demoting its chatty
// info lines to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
