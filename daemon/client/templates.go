package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Template is an endpoint template as the daemon shows it (GET
// /v1/templates): a named, versioned preset from which an endpoint is
// deployed by giving only what has no default.
type Template struct {
	Name               string        `json:"name"`
	Version            int           `json:"version"`
	Builtin            bool          `json:"builtin,omitempty"`
	Description        string        `json:"description,omitempty"`
	Category           string        `json:"category,omitempty"`
	Image              string        `json:"image"`
	Command            []string      `json:"command,omitempty"`
	Env                []TemplateEnv `json:"env,omitempty"`
	GPUCount           int           `json:"gpuCount"`
	GPUTypes           []string      `json:"gpuTypes,omitempty"`
	MemoryMB           int           `json:"memoryMb,omitempty"`
	CPUs               float64       `json:"cpus,omitempty"`
	WorkersMin         int           `json:"workersMin"`
	WorkersMax         int           `json:"workersMax"`
	IdleTimeout        int           `json:"idleTimeout"` // seconds; 0: the endpoint default
	ExecutionTimeoutMs int64         `json:"executionTimeoutMs,omitempty"`
	ScalerType         string        `json:"scalerType,omitempty"`
	ScalerValue        int           `json:"scalerValue,omitempty"`
	Flashboot          bool          `json:"flashboot,omitempty"`
	CreatedAt          int64         `json:"createdAt,omitempty"` // Unix ms
	UpdatedAt          int64         `json:"updatedAt,omitempty"` // Unix ms

	Raw json.RawMessage `json:"-"`
}

// TemplateEnv is one documented variable of a template.
type TemplateEnv struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Default     string `json:"default,omitempty"`
	Required    bool   `json:"required,omitempty"`
	Secret      bool   `json:"secret,omitempty"`
}

// UnmarshalJSON keeps the raw object.
func (t *Template) UnmarshalJSON(b []byte) error {
	type plain Template
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = Template(p)
	t.Raw = bytes.Clone(b)
	return nil
}

// DeployRequest is the body of a deploy: the new endpoint's name, values
// for the template's variables, and settings that override the template's
// (nil: the template's).
type DeployRequest struct {
	Name        string            `json:"name"`
	Env         map[string]string `json:"env,omitempty"`
	GPUCount    *int              `json:"gpuCount,omitempty"`
	GPUTypes    []string          `json:"gpuTypes,omitempty"`
	WorkersMin  *int              `json:"workersMin,omitempty"`
	WorkersMax  *int              `json:"workersMax,omitempty"`
	IdleTimeout *int              `json:"idleTimeout,omitempty"` // seconds
}

// ListTemplates lists the templates: the built-in ones first, then the
// operator's by name.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out struct {
		Templates []Template `json:"templates"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/templates", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	if out.Templates == nil {
		out.Templates = []Template{}
	}
	return out.Templates, nil
}

// GetTemplate returns the template called name.
func (c *Client) GetTemplate(ctx context.Context, name string) (*Template, error) {
	var t Template
	if _, err := c.do(ctx, http.MethodGet, "/v1/templates/"+url.PathEscape(name), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// CreateTemplate creates a template from its JSON definition, sent as it
// is (the daemon refuses fields it does not know).
func (c *Client) CreateTemplate(ctx context.Context, def json.RawMessage) (*Template, error) {
	var t Template
	if _, err := c.do(ctx, http.MethodPost, "/v1/templates", nil, def, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// UpdateTemplate replaces the template called name with def, as a whole;
// its version grows by one.
func (c *Client) UpdateTemplate(ctx context.Context, name string, def json.RawMessage) (*Template, error) {
	var t Template
	if _, err := c.do(ctx, http.MethodPatch, "/v1/templates/"+url.PathEscape(name), nil, def, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// DeleteTemplate deletes the operator template called name and returns it
// as it was.
func (c *Client) DeleteTemplate(ctx context.Context, name string) (*Template, error) {
	var t Template
	if _, err := c.do(ctx, http.MethodDelete, "/v1/templates/"+url.PathEscape(name), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// DeployTemplate creates an endpoint from the template called name (POST
// /v1/templates/{name}:deploy) and returns it as GetEndpoint does.
func (c *Client) DeployTemplate(ctx context.Context, name string, req DeployRequest) (*Endpoint, error) {
	var e Endpoint
	if _, err := c.do(ctx, http.MethodPost, "/v1/templates/"+url.PathEscape(name)+":deploy", nil, req, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
