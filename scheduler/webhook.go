package scheduler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/emberhq/ember/scheduler/store"
)

// webhookOutbox is the webhook outbox (package webhook) as the scheduler
// uses it: deliveries written with a terminal state are handed over once
// their batch is committed, and recovery resumes the pending ones.
type webhookOutbox interface {
	Schedule(ds []*store.Delivery)
	Load(ctx context.Context) error
}

// putWebhook puts a delivery for r into batch b if r has a webhook, and
// returns it (nil without a webhook) for the outbox once the batch is
// committed. The body is the status object as it is now.
func putWebhook(b store.Batch, r *store.Job) (*store.Delivery, error) {
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
