package client

import (
	"context"
	"io"
	"net/url"
)

// LogOptions select what EndpointLogs prints.
type LogOptions struct {
	// Follow goes on printing what the workers write, workers that start
	// joining, until ctx ends.
	Follow bool
	// Since, when set, leaves out lines written before it: an RFC 3339
	// time, Unix seconds, or a duration back from now ("10m").
	Since string
	// Timestamps shows each line's time after the worker id.
	Timestamps bool
}

// EndpointLogs copies endpoint id's log to w: its workers' logs (live
// ones, and those stopped while their files are kept) merged in time
// order, each line prefixed "WORKER | ". With o.Follow it goes on until
// ctx ends (and then returns ctx's error) or the endpoint is deleted (and
// then returns nil).
func (c *Client) EndpointLogs(ctx context.Context, id string, o LogOptions, w io.Writer) error {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Timestamps {
		q.Set("timestamps", "1")
	}
	path := "/v1/endpoints/" + url.PathEscape(id) + "/logs"
	return c.streamText(ctx, path, q, w, "the log of endpoint "+id)
}
