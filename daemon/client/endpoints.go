package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Scaler types the daemon accepts in Endpoint.ScalerType.
const (
	ScalerQueueDelay   = "QUEUE_DELAY"
	ScalerRequestCount = "REQUEST_COUNT"
)

// Endpoint is an endpoint as the daemon returns it.
type Endpoint struct {
	ID                 string            `json:"id,omitempty"`
	Name               string            `json:"name,omitempty"`
	Image              string            `json:"image,omitempty"`
	Command            []string          `json:"command,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	WorkersMin         int               `json:"workersMin"`
	WorkersMax         int               `json:"workersMax"`
	IdleTimeout        int               `json:"idleTimeout"` // seconds
	ExecutionTimeoutMs int64             `json:"executionTimeoutMs"`
	ScalerType         string            `json:"scalerType,omitempty"`
	ScalerValue        int               `json:"scalerValue"`
	GPUCount           int               `json:"gpuCount"`
	GPUTypes           []string          `json:"gpuTypes,omitempty"`
	MemoryMB           int               `json:"memoryMb"`
	CPUs               float64           `json:"cpus"`
	PidsLimit          int               `json:"pidsLimit"`
	Network            string            `json:"network,omitempty"`
	InitTimeout        int               `json:"initTimeout"` // seconds; 0 from a daemon that predates it
	Flashboot          bool              `json:"flashboot"`
	FlashbootWindow    int               `json:"flashbootWindow"`           // seconds
	MaxAttempts        int               `json:"maxAttempts"`               // 0: the daemon's --max-attempts
	GPUMemoryMB        int               `json:"gpuMemoryMb"`               // free MiB per GPU at placement; 0: any
	Generation         int64             `json:"generation"`                // raised by updates that replace workers; 0 from a daemon that predates it
	Template           string            `json:"template,omitempty"`        // the template it was deployed from (ember template deploy)
	TemplateVersion    int               `json:"templateVersion,omitempty"` // that template's version then
	Init               bool              `json:"init"`                      // ember-init as PID 1 of the worker's container
	GPUPark            string            `json:"gpuPark,omitempty"`         // never, onReclaim or idle; "" from a daemon that predates it
	GPUParkDelay       int               `json:"gpuParkDelay"`              // seconds
	CreatedAt          string            `json:"createdAt,omitempty"`       // RFC 3339
	UpdatedAt          string            `json:"updatedAt,omitempty"`       // RFC 3339

	// Raw is the object exactly as the daemon sent it, so that callers can
	// pass on fields this client does not know yet.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON accepts integers as JSON numbers and as strings (see
// decodeLenient): the /v1 routes go through grpc-gateway, whose protojson
// encoding writes the 64-bit generation as a string ("generation": "3"),
// while the int32 fields (executionTimeoutMs among them) arrive as numbers.
func (e *Endpoint) UnmarshalJSON(b []byte) error {
	if err := decodeLenient(b, e); err != nil {
		return err
	}
	e.Raw = bytes.Clone(b)
	return nil
}

// EndpointSpec is the body of a create (POST) or update (PATCH). Every field
// is optional on the wire: empty strings and nil slices and maps are left out,
// and numbers are pointers so that an explicit 0 is sent while an unset
// number is left to the daemon's default.
type EndpointSpec struct {
	Name               string            `json:"name,omitempty"`
	Image              string            `json:"image,omitempty"`
	Command            []string          `json:"command,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	WorkersMin         *int              `json:"workersMin,omitempty"`
	WorkersMax         *int              `json:"workersMax,omitempty"`
	IdleTimeout        *int              `json:"idleTimeout,omitempty"` // seconds
	ExecutionTimeoutMs *int64            `json:"executionTimeoutMs,omitempty"`
	ScalerType         string            `json:"scalerType,omitempty"`
	ScalerValue        *int              `json:"scalerValue,omitempty"`
	GPUCount           *int              `json:"gpuCount,omitempty"`
	GPUTypes           []string          `json:"gpuTypes,omitempty"`
	MemoryMB           *int              `json:"memoryMb,omitempty"`
	CPUs               *float64          `json:"cpus,omitempty"`
	PidsLimit          *int              `json:"pidsLimit,omitempty"`
	Network            string            `json:"network,omitempty"`
	InitTimeout        *int              `json:"initTimeout,omitempty"` // seconds
	Flashboot          *bool             `json:"flashboot,omitempty"`
	FlashbootWindow    *int              `json:"flashbootWindow,omitempty"` // seconds
	MaxAttempts        *int              `json:"maxAttempts,omitempty"`
	GPUMemoryMB        *int              `json:"gpuMemoryMb,omitempty"`
	Init               *bool             `json:"init,omitempty"`
	GPUPark            string            `json:"gpuPark,omitempty"`      // never, onReclaim or idle
	GPUParkDelay       *int              `json:"gpuParkDelay,omitempty"` // seconds
}

// UnmarshalJSON accepts integers as strings too (see decodeLenient), so
// that a definition may write them as protojson writes 64-bit integers.
func (s *EndpointSpec) UnmarshalJSON(b []byte) error {
	return decodeLenient(b, s)
}

// readOnlyEndpointFields are set by the daemon. ParseEndpointSpec drops them
// so that an exported endpoint can be used as a definition as it is.
var readOnlyEndpointFields = []string{"id", "generation", "template", "templateVersion", "createdAt", "updatedAt"}

// specFields lists the JSON names of EndpointSpec, derived from its tags so
// that the list cannot drift from the struct.
var specFields = func() []string {
	t := reflect.TypeFor[EndpointSpec]()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}()

// ParseEndpointSpec reads a JSON endpoint definition strictly: a misspelt
// field ("workerMax") is an error rather than silently falling back to a
// server default. The daemon-owned fields id, createdAt and updatedAt are
// ignored, so an endpoint printed with --json can be re-created from.
func ParseEndpointSpec(data []byte) (*EndpointSpec, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("endpoint definition must be a JSON object: %w", err)
	}
	if fields == nil {
		return nil, errors.New("endpoint definition must be a JSON object, not null")
	}
	var unknown []string
	for k := range fields {
		if slices.Contains(readOnlyEndpointFields, k) {
			delete(fields, k)
			continue
		}
		if !slices.Contains(specFields, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown endpoint field(s) %s; known fields: %s",
			strings.Join(unknown, ", "), strings.Join(specFields, ", "))
	}
	clean, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("re-encoding endpoint definition: %w", err)
	}
	var spec EndpointSpec
	if err := json.Unmarshal(clean, &spec); err != nil {
		return nil, fmt.Errorf("invalid endpoint definition: %w", err)
	}
	return &spec, nil
}

// endpointPath is the admin path of one endpoint. IDs are escaped because the
// CLI passes user input (possibly a name) straight through.
func endpointPath(id string) string {
	return "/v1/endpoints/" + url.PathEscape(id)
}

// CreateEndpoint creates an endpoint; fields left unset in spec get the
// daemon's defaults.
func (c *Client) CreateEndpoint(ctx context.Context, spec *EndpointSpec) (*Endpoint, error) {
	var ep Endpoint
	if _, err := c.do(ctx, http.MethodPost, "/v1/endpoints", nil, spec, &ep); err != nil {
		return nil, fmt.Errorf("creating endpoint: %w", err)
	}
	return &ep, nil
}

// UpdateEndpoint changes the fields set in spec and leaves the others alone.
func (c *Client) UpdateEndpoint(ctx context.Context, id string, spec *EndpointSpec) (*Endpoint, error) {
	var ep Endpoint
	if _, err := c.do(ctx, http.MethodPatch, endpointPath(id), nil, spec, &ep); err != nil {
		return nil, fmt.Errorf("updating endpoint %q: %w", id, err)
	}
	return &ep, nil
}

// ListEndpoints returns every endpoint, in the daemon's order.
func (c *Client) ListEndpoints(ctx context.Context) ([]Endpoint, error) {
	// grpc-gateway omits the repeated field when it is empty, so a missing
	// key simply decodes to a nil slice.
	var resp struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/endpoints", nil, nil, &resp); err != nil {
		return nil, fmt.Errorf("listing endpoints: %w", err)
	}
	return resp.Endpoints, nil
}

// GetEndpoint fetches one endpoint by ID. Use ResolveEndpoint to accept
// names as well.
func (c *Client) GetEndpoint(ctx context.Context, id string) (*Endpoint, error) {
	var ep Endpoint
	if _, err := c.do(ctx, http.MethodGet, endpointPath(id), nil, nil, &ep); err != nil {
		return nil, fmt.Errorf("getting endpoint %q: %w", id, err)
	}
	return &ep, nil
}

// DeleteEndpoint deletes an endpoint by ID.
func (c *Client) DeleteEndpoint(ctx context.Context, id string) error {
	if _, err := c.do(ctx, http.MethodDelete, endpointPath(id), nil, nil, nil); err != nil {
		return fmt.Errorf("deleting endpoint %q: %w", id, err)
	}
	return nil
}

// ErrEndpointNotFound is returned (wrapped) by ResolveEndpoint when neither
// an ID nor a name matches.
var ErrEndpointNotFound = errors.New("no such endpoint")

// AmbiguousNameError is returned by ResolveEndpoint when several endpoints
// share the name, since picking one would act on the wrong endpoint half of
// the time.
type AmbiguousNameError struct {
	Name string
	IDs  []string
}

func (e *AmbiguousNameError) Error() string {
	return fmt.Sprintf("%d endpoints are named %q (IDs %s); use an ID",
		len(e.IDs), e.Name, strings.Join(e.IDs, ", "))
}

// ResolveEndpoint finds an endpoint by ID or, failing that, by name, so that
// people can use the names they chose instead of generated IDs. An ID always
// wins over a name. The daemon answering 400 for the ID lookup (a name not
// shaped like an ID) also falls through to the name lookup.
func (c *Client) ResolveEndpoint(ctx context.Context, idOrName string) (*Endpoint, error) {
	if idOrName == "" {
		return nil, errors.New("empty endpoint ID or name")
	}
	ep, err := c.GetEndpoint(ctx, idOrName)
	if err == nil {
		return ep, nil
	}
	if !IsNotFound(err) && !isBadRequest(err) {
		return nil, err
	}
	all, err := c.ListEndpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("resolving endpoint name %q: %w", idOrName, err)
	}
	var matches []Endpoint
	for _, e := range all {
		if e.Name == idOrName {
			matches = append(matches, e)
		}
	}
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("%w: %q is neither an endpoint ID nor a name", ErrEndpointNotFound, idOrName)
	case 1:
		return &matches[0], nil
	default:
		ids := make([]string, len(matches))
		for i, m := range matches {
			ids[i] = m.ID
		}
		return nil, &AmbiguousNameError{Name: idOrName, IDs: ids}
	}
}

// flexInt decodes an integer written as a JSON number, a JSON string (the
// protojson form of 64-bit integers) or null.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if s == "null" {
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*f = 0
			return nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	// Durations measured in milliseconds may come as floats.
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	*f = flexInt(int64(x))
	return nil
}

// decodeLenient decodes the JSON object b into *dst, a struct of exported
// fields, as json.Unmarshal decodes into a zero value, except that its
// integer fields (and pointers to them) are read as flexInt: a JSON
// number, a string holding one, a float (cut to an integer) or null. It
// decodes into a struct of the same fields and JSON names with flexInt in
// place of each integer, so the field list is the struct's own and cannot
// drift from a copy. Fields tagged json:"-" are left zero.
func decodeLenient(b []byte, dst any) error {
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	flex := reflect.TypeFor[flexInt]()
	var fields []reflect.StructField
	var index []int // of each aux field in t
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		// Only the name: the options concern encoding, and
		// json.Unmarshal's type errors print the type with its tags.
		f.Tag = reflect.StructTag(`json:"` + name + `"`)
		switch {
		case isInteger(f.Type):
			f.Type = flex
		case f.Type.Kind() == reflect.Pointer && isInteger(f.Type.Elem()):
			f.Type = reflect.PointerTo(flex)
		}
		fields = append(fields, f)
		index = append(index, i)
	}
	aux := reflect.New(reflect.StructOf(fields))
	if err := json.Unmarshal(b, aux.Interface()); err != nil {
		return err
	}
	v.SetZero()
	for i, j := range index {
		from, to := aux.Elem().Field(i), v.Field(j)
		switch {
		case from.Type() == flex:
			to.SetInt(from.Int())
		case from.Type() == reflect.PointerTo(flex):
			if !from.IsNil() {
				p := reflect.New(to.Type().Elem())
				p.Elem().SetInt(from.Elem().Int())
				to.Set(p)
			}
		default:
			to.Set(from)
		}
	}
	return nil
}

// isInteger says whether t is a signed integer type.
func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}
