package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// APIKey is a named admin key as the daemon lists it: never its secret,
// except in the answer to CreateKey.
type APIKey struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Key is the secret, sent once, when the key is created.
	Key string `json:"key,omitempty"`
	// CreatedAt is RFC 3339.
	CreatedAt string `json:"createdAt"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object.
func (k *APIKey) UnmarshalJSON(b []byte) error {
	type plain APIKey
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*k = APIKey(p)
	k.Raw = bytes.Clone(b)
	return nil
}

// CreateKey makes a named admin key (POST /v1/keys). The answer holds the
// secret, which the daemon does not keep and cannot show again.
func (c *Client) CreateKey(ctx context.Context, name string) (*APIKey, error) {
	var k APIKey
	if _, err := c.do(ctx, http.MethodPost, "/v1/keys", nil, map[string]string{"name": name}, &k); err != nil {
		return nil, fmt.Errorf("creating API key: %w", err)
	}
	return &k, nil
}

// ListKeys lists the named admin keys, oldest first. The bootstrap key
// (the daemon's api.key file) is not among them.
func (c *Client) ListKeys(ctx context.Context) ([]APIKey, error) {
	var out struct {
		Keys []APIKey `json:"keys"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/keys", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("listing API keys: %w", err)
	}
	if out.Keys == nil {
		out.Keys = []APIKey{}
	}
	return out.Keys, nil
}

// RevokeKey deletes a named key by ID; it stops working at once.
func (c *Client) RevokeKey(ctx context.Context, id string) (*APIKey, error) {
	var k APIKey
	if _, err := c.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}
