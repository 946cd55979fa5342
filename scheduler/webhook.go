package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// outbox delivers webhooks: one POST of the status object when a job turns
// terminal, retried up to WebhookAttempts in total, WebhookRetryDelay apart.
// Deliveries are written in the same batch as the terminal state, so a
// restart resumes them instead of losing them.
type outbox struct {
	s    *Scheduler
	mu   sync.Mutex
	due  map[string]*store.Delivery // by job id
	wake chan struct{}
}

func newOutbox(s *Scheduler) *outbox {
	return &outbox{s: s, due: make(map[string]*store.Delivery), wake: make(chan struct{}, 1)}
}

// add puts a delivery for r into batch b if r has a webhook, and returns
// it (nil without a webhook) for schedule once the batch is committed.
func (o *outbox) add(b store.Batch, r *store.Job) (*store.Delivery, error) {
	if r.Webhook == "" {
		return nil, nil
	}
	body, err := json.Marshal(recordView(r))
	if err != nil {
		return nil, fmt.Errorf("encode webhook body: %w", err)
	}
	d := &store.Delivery{JobID: r.ID, URL: r.Webhook, Body: body, NextAt: r.FinishedAt}
	return d, b.PutDelivery(d)
}

// schedule queues in memory the deliveries that add wrote, once committed.
func (o *outbox) schedule(ds []*store.Delivery) {
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

func (o *outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// load resumes deliveries that were pending when the daemon stopped.
func (o *outbox) load() error {
	ds, err := o.s.store.Deliveries(o.s.ctx)
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

// run sends due deliveries until ctx ends, at most 16 at a time.
func (o *outbox) run(ctx context.Context) {
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
func (o *outbox) attempt(ctx context.Context, d *store.Delivery) {
	s := o.s
	err := post(ctx, s.cfg.HTTPClient, d.URL, d.Body)
	o.mu.Lock()
	cur := o.due[d.JobID]
	if cur != d {
		// Replaced meanwhile (the job was retried and ended again).
		o.mu.Unlock()
		return
	}
	d.Attempts++
	finished := err == nil || d.Attempts >= s.cfg.WebhookAttempts
	if finished {
		delete(o.due, d.JobID)
	} else {
		d.NextAt = time.Now().Add(s.tun().WebhookRetryDelay).UnixMilli()
	}
	snapshot := *d
	o.mu.Unlock()

	b := s.store.NewBatch()
	if finished {
		b.DeleteDelivery(d.JobID)
	} else if perr := b.PutDelivery(&snapshot); perr != nil {
		s.log.Error("webhook outbox", "job", d.JobID, "err", perr)
	}
	if cerr := s.store.Commit(ctx, b); cerr != nil && ctx.Err() == nil {
		s.log.Error("webhook outbox write", "job", d.JobID, "err", cerr)
	}
	switch {
	case err == nil:
		s.log.Debug("webhook delivered", "job", d.JobID, "attempt", snapshot.Attempts)
	case finished:
		s.log.Warn("webhook given up", "job", d.JobID, "url", d.URL, "attempts", snapshot.Attempts, "err", err)
	default:
		s.log.Info("webhook failed; will retry", "job", d.JobID, "attempt", snapshot.Attempts, "err", err)
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
