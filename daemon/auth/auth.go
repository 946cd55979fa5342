// Package auth holds what every transport of emberd (REST, the /v1
// gateway, gRPC) agrees on about a request's caller: the scopes a key can
// have, the identity an authenticated request carries in its context, and
// the counter of refused requests.
//
// Authentication (which key) and authorization (may it call this route)
// are daemon/authz's one check, which every transport runs; this package
// only names the vocabulary, so that the audit trail (daemon/audit), the
// rate limiter and the handlers read one Caller type whatever the
// transport. It imports nothing of Ember, so that every daemon package may
// import it.
package auth

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Scope is what a key may do, and what a route needs.
type Scope string

const (
	// Admin allows every route: endpoints, keys, images, workers, purge.
	Admin Scope = "admin"
	// Invoke allows RunPod's client routes (/v2/{endpoint}/...), their /v1
	// and gRPC twins, and the OpenAI route, of the key's endpoints (all
	// endpoints when the key lists none).
	Invoke Scope = "invoke"
	// Read allows status, health, stats, metrics, GPUs, workers and logs.
	Read Scope = "read"
)

// Scopes lists the key scopes, widest first.
var Scopes = []Scope{Admin, Invoke, Read}

// ParseScope reads a scope name.
func ParseScope(s string) (Scope, error) {
	for _, sc := range Scopes {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("scope %q: want admin, invoke or read", s)
}

// Caller is the authenticated identity of a request. It never holds the
// secret that proved it.
type Caller struct {
	// KeyID is the key's id ("k-..."); BootstrapKeyID for the admin key in
	// DATA-DIR/api.key.
	KeyID string
	// Name is the key's name as its creator gave it.
	Name string
	// Scope is the key's scope.
	Scope Scope
	// Endpoints, when not empty, are the only endpoint ids an Invoke key
	// may use.
	Endpoints []string
	// ExpiresAt is when the key stops working; zero for never.
	ExpiresAt time.Time
}

// BootstrapKeyID and BootstrapKeyName identify the admin key kept in
// DATA-DIR/api.key, which has no entry in the key store.
const (
	BootstrapKeyID   = "admin"
	BootstrapKeyName = "api.key"
)

// Allows reports whether the caller's scope grants need (Admin grants
// everything).
func (c Caller) Allows(need Scope) bool {
	return c.Scope == Admin || c.Scope == need
}

// AllowsEndpoint reports whether the caller may use endpoint id: any, for a
// key that lists no endpoints.
func (c Caller) AllowsEndpoint(id string) bool {
	return len(c.Endpoints) == 0 || slices.Contains(c.Endpoints, id)
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller ctx carries, and whether it carries one.
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Refusal reasons, the "reason" label of Refused.
const (
	ReasonMissingKey  = "missing_key"  // 401: no key presented
	ReasonWrongKey    = "wrong_key"    // 401: a key nobody has
	ReasonExpired     = "expired"      // 401: a key past its expiry
	ReasonWorkerToken = "worker_token" // 401: a bad or foreign worker token
	ReasonScope       = "scope"        // 403: the key's scope does not allow the route
	ReasonEndpoint    = "endpoint"     // 403: the key does not list the endpoint
	ReasonRate        = "rate"         // 429: over the request rate
	ReasonConcurrency = "concurrency"  // 429: over the concurrent requests
	ReasonSession     = "session"      // 401: a console session cookie that is unknown or expired
	ReasonCSRF        = "csrf"         // 403: a console change without the session's CSRF token
)

// Refused counts requests refused with 401, 403 or 429, by status code and
// reason (one of the Reason constants). Labels never carry a key, a key id
// or a token: only these fixed values.
var Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "ember_requests_refused_total",
	Help: "Requests refused with 401 (authentication), 403 (scope) or 429 (rate limit), by code and reason.",
}, []string{"code", "reason"})

// CountRefused adds one to Refused for code and reason.
func CountRefused(code int, reason string) {
	Refused.WithLabelValues(fmt.Sprint(code), reason).Inc()
}
