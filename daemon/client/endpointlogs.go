package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return fmt.Errorf("building GET %s request: %w", path, err)
	}
	u.Path = p
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("building GET %s request: %w", path, err)
	}
	req.Header.Set("Accept", "text/plain, application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return parseAPIError(http.MethodGet, path, resp.StatusCode, data)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reading the log of endpoint %s: %w", id, err)
	}
	return nil
}
