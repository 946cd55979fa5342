package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Key scopes, as the daemon names them.
const (
	ScopeAdmin  = "admin"
	ScopeInvoke = "invoke"
	ScopeRead   = "read"
)

// APIKey is a named API key as the daemon lists it: never its secret,
// except in the answer to CreateKey.
type APIKey struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Key is the secret, sent once, when the key is created.
	Key string `json:"key,omitempty"`
	// Scope is admin, invoke or read.
	Scope string `json:"scope"`
	// Endpoints are the endpoint IDs an invoke key is limited to; empty:
	// all endpoints.
	Endpoints []string `json:"endpoints"`
	// CreatedAt, ExpiresAt and LastUsedAt are RFC 3339; ExpiresAt is
	// empty for a key that never expires, LastUsedAt for one never used.
	CreatedAt  string `json:"createdAt"`
	ExpiresAt  string `json:"expiresAt"`
	LastUsedAt string `json:"lastUsedAt"`

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

// KeySpec is what CreateKey asks for.
type KeySpec struct {
	Name string `json:"name"`
	// Scope is required: ScopeAdmin, ScopeInvoke or ScopeRead.
	Scope string `json:"scope"`
	// Endpoints, IDs or names, limit an invoke key; empty: all.
	Endpoints []string `json:"endpoints,omitempty"`
	// ExpiresIn is a duration such as "30d", "12h" or "90m"; empty:
	// never.
	ExpiresIn string `json:"expiresIn,omitempty"`
}

// CreateKey makes a named key (POST /v1/keys). The answer holds the
// secret, which the daemon does not keep and cannot show again.
func (c *Client) CreateKey(ctx context.Context, spec KeySpec) (*APIKey, error) {
	var k APIKey
	if _, err := c.do(ctx, http.MethodPost, "/v1/keys", nil, spec, &k); err != nil {
		return nil, fmt.Errorf("creating API key: %w", err)
	}
	return &k, nil
}

// ListKeys lists the named keys, oldest first. The bootstrap admin key
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

// RotatedKey is the answer of RotateAdminKey.
type RotatedKey struct {
	// Key is the new admin key.
	Key string `json:"key"`
	// File is where the daemon wrote it (its api.key).
	File string `json:"file"`
}

// RotateAdminKey replaces the bootstrap admin key (POST
// /v1/keys:rotate-admin). The daemon writes the new key to its api.key
// file; the old key stops working at once, including the one this client
// was made with.
func (c *Client) RotateAdminKey(ctx context.Context) (*RotatedKey, error) {
	var k RotatedKey
	if _, err := c.do(ctx, http.MethodPost, "/v1/keys:rotate-admin", nil, json.RawMessage(`{}`), &k); err != nil {
		return nil, fmt.Errorf("rotating the admin key: %w", err)
	}
	return &k, nil
}
