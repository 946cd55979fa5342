// Package webhook delivers RunPod webhooks: one POST of a job's status
// object when the job turns terminal, retried a few times, surviving a
// restart of the daemon (docs/compat.md, docs/durability.md).
//
// It owns the delivery loop, the retry policy and the HTTP requests. The
// deliveries themselves are written by the scheduler into the same store
// batch as the terminal state and handed over (Outbox.Schedule) once that
// batch is durable; the outbox reads them back at start (Outbox.Load) and
// records each attempt's outcome through its Store.
//
// It imports scheduler/store for the record types and nothing else of
// Ember; it must not import the scheduler, whose lock it knows nothing of.
package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// Store is what the outbox persists through: the pending deliveries at
// start, and one batch per attempt's outcome. Every store.Store is one.
type Store interface {
	Deliveries(ctx context.Context) ([]store.Delivery, error)
	NewBatch() store.Batch
	Commit(ctx context.Context, b store.Batch) error
}

// Config configures an Outbox.
type Config struct {
	Store Store
	// Client sends the POSTs.
	Client *http.Client
	// Attempts is the total number of POSTs per webhook (RunPod: 3).
	Attempts int
	// RetryDelay is read before each retry is scheduled, so that a change
	// of the setting applies from the next failure (RunPod: 10 s).
	RetryDelay func() time.Duration
	Logger     *slog.Logger
}

// Outbox delivers webhooks: one POST of the status object when a job turns
// terminal, retried up to Config.Attempts in total, Config.RetryDelay
// apart. Deliveries are written in the same batch as the terminal state, so
// a restart resumes them instead of losing them.
type Outbox struct {
	cfg  Config
	mu   sync.Mutex
	due  map[string]*store.Delivery // by job id
	wake chan struct{}
}

// NewOutbox returns an outbox with nothing due; Load resumes what the
// store holds, Run delivers.
func NewOutbox(cfg Config) *Outbox {
	return &Outbox{cfg: cfg, due: make(map[string]*store.Delivery), wake: make(chan struct{}, 1)}
}

// Schedule queues in memory deliveries that the caller wrote into a store
// batch, once that batch is committed.
func (o *Outbox) Schedule(ds []*store.Delivery) {
	if len(ds) == 0 {
		return
	}
	o.mu.Lock()
	for _, d := range ds {
		o.due[d.JobID] = d
	}
	o.mu.Unlock()
	o.poke()
}

func (o *Outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Load resumes deliveries that were pending when the daemon stopped.
func (o *Outbox) Load(ctx context.Context) error {
	ds, err := o.cfg.Store.Deliveries(ctx)
	if err != nil {
		return fmt.Errorf("load webhook outbox: %w", err)
	}
	o.mu.Lock()
	for i := range ds {
		o.due[ds[i].JobID] = &ds[i]
	}
	o.mu.Unlock()
	return nil
}

// Run sends due deliveries until ctx ends, at most 16 at a time, and
// returns once every attempt it started has finished.
func (o *Outbox) Run(ctx context.Context) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := make(map[string]bool)
	var inflightMu sync.Mutex
	for {
		now := time.Now().UnixMilli()
		next := int64(-1)
		var ready []*store.Delivery
		o.mu.Lock()
		inflightMu.Lock()
		for id, d := range o.due {
			if inflight[id] {
				continue
			}
			if d.NextAt <= now {
				ready = append(ready, d)
				inflight[id] = true
			} else if next < 0 || d.NextAt < next {
				next = d.NextAt
			}
		}
		inflightMu.Unlock()
		o.mu.Unlock()
		for _, d := range ready {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(d *store.Delivery) {
				defer wg.Done()
				defer func() { <-sem }()
				o.attempt(ctx, d)
				inflightMu.Lock()
				delete(inflight, d.JobID)
				inflightMu.Unlock()
				o.poke()
			}(d)
		}
		wait := time.Hour
		if next >= 0 {
			wait = time.Duration(next-time.Now().UnixMilli()) * time.Millisecond
			if wait < 0 {
				wait = 0
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-o.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// attempt POSTs once and records the outcome durably.
func (o *Outbox) attempt(ctx context.Context, d *store.Delivery) {
	err := post(ctx, o.cfg.Client, d.URL, d.Body)
	o.mu.Lock()
	cur := o.due[d.JobID]
	if cur != d {
		// Replaced meanwhile (the job was retried and ended again).
		o.mu.Unlock()
		return
	}
	d.Attempts++
	finished := err == nil || d.Attempts >= o.cfg.Attempts
	if finished {
		delete(o.due, d.JobID)
	} else {
		d.NextAt = time.Now().Add(o.cfg.RetryDelay()).UnixMilli()
	}
	snapshot := *d
	o.mu.Unlock()

	b := o.cfg.Store.NewBatch()
	if finished {
		b.DeleteDelivery(d.JobID)
	} else if perr := b.PutDelivery(&snapshot); perr != nil {
		o.cfg.Logger.Error("webhook outbox", "job", d.JobID, "err", perr)
	}
	if cerr := o.cfg.Store.Commit(ctx, b); cerr != nil && ctx.Err() == nil {
		o.cfg.Logger.Error("webhook outbox write", "job", d.JobID, "err", cerr)
	}
	switch {
	case err == nil:
		o.cfg.Logger.Debug("webhook delivered", "job", d.JobID, "attempt", snapshot.Attempts)
	case finished:
		o.cfg.Logger.Warn("webhook given up", "job", d.JobID, "url", d.URL, "attempts", snapshot.Attempts, "err", err)
	default:
		o.cfg.Logger.Info("webhook failed; will retry", "job", d.JobID, "attempt", snapshot.Attempts, "err", err)
	}
}

func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ember-webhook/1")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
