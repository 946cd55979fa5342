// Package store keeps Ember's durable state: endpoints, jobs, stream
// chunks, the webhook outbox and the records of running workers.
//
// The package has two halves. The contract (this file and record.go) is the
// Store and Batch interfaces, the records they carry and their errors: it is
// what the scheduler depends on, and what a second engine must implement.
// The Badger engine (badger.go, chunks.go, space.go, ping.go, size.go) is
// the one implementation, on one machine's disk. The conformance suite in
// scheduler/store/storetest checks an engine against the contract; any
// engine must pass it. docs/durability.md explains the promises below to an
// operator.
//
// The store knows records and keys, not job semantics: the scheduler
// decides what a transition means and hands the store complete records to
// write. The package imports nothing of Ember (no scheduler, daemon or oci
// package): the dependencies point from the scheduler down to it.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a record does not exist (or has expired).
var ErrNotFound = errors.New("not found")

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store closed")

// Store is the scheduler's durable state, as transactions on records.
//
// # Writes
//
// Every write goes into a Batch, which one of Commit, CommitLater or
// CommitAsync queues. The promises, which the scheduler's crash recovery
// relies on (scheduler.go, recover):
//
//   - Order. Commits land in the order they were queued, whichever of the
//     three queued them and from whichever goroutine, and a batch's writes
//     in the order they were added: a later write of a record wins.
//   - Durability. A commit is acknowledged (Commit returns nil, the channel
//     of CommitLater yields nil, a Flush after it returns nil) only once it
//     survives kill -9 of the process and a power cut. A write that was not
//     acknowledged may or may not be there after a crash.
//   - Prefix. After a crash, what is there is a prefix of what was queued,
//     in queue order: an acknowledged commit brings every commit queued
//     before it, asynchronous ones included.
//   - Atomicity. A batch lands whole, for readers and across a crash, as
//     long as the commits written with it fit in one engine transaction
//     (Badger groups concurrent commits into one, which holds about 1 MB
//     of records: far above what the scheduler's commits add up to, except
//     a recovery after a mass failure); a larger group lands in order, in
//     parts, and a crash may leave a prefix of it.
//   - Idempotence. Writes are puts and deletes of records keyed by id, so
//     committing the same writes again, in a new batch (a retry of a
//     commit whose outcome is unknown because its context ended), leaves
//     the state they would have left once.
//   - Visibility. A read sees every acknowledged write, and possibly writes
//     still being acknowledged; never part of a batch, but as Atomicity
//     says.
//   - Space. A write the data disk has no room for is refused whole with a
//     *NoSpaceError (errors.Is ErrNoSpace) before any record of it is
//     written; the store goes on serving reads, and takes writes again once
//     there is room. An engine that cannot run out of space never returns it.
//   - Expiry. A job or chunk record put with an expiry is hidden from every
//     read from that instant on (rounded up to the engine's granularity,
//     never early: Badger's is a second) and stays hidden after a restart;
//     its space is reclaimed later (Maintain).
//
// # Engines
//
// Open is the engine's own (OpenBadger). The Badger engine is one process
// on one disk: Badger locks its directory, so a second process cannot open
// it. The interface assumes no more than that: callers reach the data only
// through these methods (payload and stream references in records are the
// engine's opaque names), every call that waits for the data takes a
// context (CommitLater and CommitAsync only queue), and
// writes are idempotent records keyed by id, so an engine that replicates a
// log of batches across machines can implement it, acknowledging a commit
// once a quorum holds it.
//
// Methods may be called from any goroutine.
type Store interface {
	// NewBatch starts an empty batch for this store. A batch is not safe
	// for concurrent use and is committed at most once.
	NewBatch() Batch

	// Commit queues b behind every earlier commit and waits until it is
	// durable. If ctx ends first it returns ctx's error and the batch may
	// still land, like any unacknowledged write. Concurrent commits may
	// share one disk sync. After Close it returns ErrClosed.
	Commit(ctx context.Context, b Batch) error
	// CommitLater queues b behind every earlier commit and returns a
	// channel that yields its outcome once it is durable, as Commit would
	// return it. Work that must only follow the write in the store (not in
	// time) can go ahead meanwhile: every later commit lands after it. It
	// waits for nothing but room in the queue.
	CommitLater(b Batch) <-chan error
	// CommitAsync queues b behind every earlier commit and returns at once.
	// It is never acknowledged and a crash may lose it; it becomes durable
	// with the next durable commit or Flush, or on its own shortly after
	// (Badger: within BadgerOptions.LazyDelay), so it costs no disk sync of
	// its own. Failures are logged, not returned; after Close the batch is
	// dropped. For writes whose loss is harmless (a lease record: the job
	// is re-queued either way) or that a later Flush makes durable.
	CommitAsync(b Batch)
	// Flush waits until everything queued before it is durable.
	Flush(ctx context.Context) error

	// Job reads one job record, or returns ErrNotFound. Without payloads,
	// input and output the engine keeps apart are left out, named by
	// InputRef and OutputRef; with payloads they are loaded into the
	// record and the references cleared.
	Job(ctx context.Context, id string, payloads bool) (*Job, error)
	// ScanJobs calls fn for every live job record, once each, from one
	// consistent snapshot, without loading payloads kept apart. An error
	// from fn stops the scan and is returned. It is meant for start-up
	// recovery: the caller rebuilds its queues from this single scan.
	ScanJobs(ctx context.Context, fn func(*Job) error) error
	// Endpoints returns every endpoint definition.
	Endpoints(ctx context.Context) ([]Endpoint, error)
	// Deliveries returns every pending webhook delivery.
	Deliveries(ctx context.Context) ([]Delivery, error)
	// Workers returns the remembered workers.
	Workers(ctx context.Context) ([]WorkerRecord, error)

	// ChunkPage reads a job's stream chunks in index order, from index
	// from up to (not including) to, until the next chunk would take the
	// page past budget bytes; the first chunk is always read, however
	// big. more reports that a chunk below to was left for the next page.
	// Chunks whose bytes are gone with their expired job are skipped.
	ChunkPage(ctx context.Context, jobID string, from, to uint64, budget int) (page []Chunk, more bool, err error)
	// ReleaseChunks frees the space of chunks of page (read by ChunkPage)
	// once their deletion has been committed. It is best effort and local:
	// the space goes with the job's record anyway.
	ReleaseChunks(jobID string, page []Chunk)
	// ChunkSpanOf returns where one job's stored chunks lie.
	ChunkSpanOf(ctx context.Context, jobID string) (ChunkSpan, error)
	// ScanChunkSpans calls fn once for every job that has stored chunks
	// (start-up recovery).
	ScanChunkSpans(ctx context.Context, fn func(jobID string, span ChunkSpan)) error

	// Ping proves the store can serve a read. It is cheap (no write, no
	// disk sync) and safe to call often, e.g. from a watchdog; after
	// Close it returns ErrClosed.
	Ping(ctx context.Context) error
	// Usage is the store's size on this machine's disk.
	Usage() Usage
	// Maintain reclaims the space of deleted and expired records every
	// interval until ctx ends. The caller owns the goroutine.
	Maintain(ctx context.Context, interval time.Duration)
	// Close writes everything queued (asynchronous commits included),
	// then releases the data. It is idempotent. A *NoSpaceError means it
	// could not close cleanly for want of space: nothing acknowledged is
	// lost, and the next open recovers as after a crash.
	Close() error
}

// Batch collects writes that a commit lands together, in the order they
// were added. Each write is a put or a delete of one record keyed by id;
// putting a record replaces the one with the same key. A record passed to
// a put may be changed by the caller as soon as the put returns.
//
// An engine may write a put's payload at once (Badger writes big inputs and
// outputs and every chunk's bytes to files of their own, synced, before the
// commit): a put that returns an error, a *NoSpaceError among them, or a
// PutChunk whose commit fails, has written no record, and what it wrote of
// a payload is swept later (Maintain).
type Batch interface {
	// PutJob writes a job record, which expires at expiresAt (zero:
	// never): that is how result retention and TTL survive restarts
	// without a sweep over all jobs. A job whose Input or Output is
	// nil and whose InputRef or OutputRef names a payload the store
	// keeps (read without payloads) keeps that payload.
	PutJob(j *Job, expiresAt time.Time) error
	// DeleteJob removes a job record; the space of its payloads and
	// stream is reclaimed after it (Maintain).
	DeleteJob(id string)
	// PutChunk stores one stream chunk of a job, expiring at expiresAt
	// (zero: never). A job's chunks are put one at a time and committed
	// in index order (the scheduler serialises a job's posts). A failure
	// fails the batch's commit, which then writes nothing.
	PutChunk(c Chunk, expiresAt time.Time)
	// DeleteChunk removes a delivered stream chunk.
	DeleteChunk(jobID string, idx uint64)
	// PutEndpoint writes an endpoint definition.
	PutEndpoint(e *Endpoint) error
	// DeleteEndpoint removes an endpoint definition.
	DeleteEndpoint(id string)
	// PutDelivery queues or updates a webhook delivery. A job has at most
	// one pending delivery: a retried job that turns terminal again
	// replaces it.
	PutDelivery(d *Delivery) error
	// DeleteDelivery removes a finished webhook delivery.
	DeleteDelivery(jobID string)
	// PutWorker remembers a running worker.
	PutWorker(w *WorkerRecord) error
	// DeleteWorker forgets a worker that has stopped.
	DeleteWorker(id string)
	// Len is the number of writes in the batch.
	Len() int
}

// ChunkSpan is where a job's stored stream chunks lie: indexes First to
// Next-1 (those not yet deleted), Bytes in all. The zero value is no chunks.
type ChunkSpan struct {
	First, Next uint64
	Bytes       int64
}

// Usage is a store's size on this machine's disk in bytes, by part; a part
// the engine does not have is zero. For an engine that measures lazily the
// figures may be up to a minute old (Badger's are).
type Usage struct {
	// Index is the engine's sorted tables (Badger: its LSM tree).
	Index int64
	// Log is its log of values (Badger: its value log).
	Log int64
	// Files is payloads and streams kept in files of their own.
	Files int64
}
