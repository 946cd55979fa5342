package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
)

// rateOf says which rate-limited operation a request routed to rt (nil:
// no route) is, and on which endpoint, from the route table (routes.go):
// RunPod's client routes under /v2/{endpoint}/ (status-sync counts as
// status, retry as run), the OpenAI route, and their /v1 twins, which take
// their gRPC method's operation. Everything else (the worker API, /health,
// endpoint and key management, probes) has no budget.
func (rt *route) rateOf(segs []string) (ep string, op ratelimit.Op, ok bool) {
	if rt == nil || rt.rate == nil {
		return "", 0, false
	}
	return segs[rt.rateSeg], *rt.rate, true
}

// limitRate applies Config.RateLimiter to the request. It must run once the
// caller is known: it keys the request's budget on the caller's key id in
// r's context (rateKey). It returns release, to be called when the request
// ends, and true; or, over a limit, answers 429 with Retry-After and
// returns false.
func (h *Server) limitRate(w http.ResponseWriter, r *http.Request, rt *route, segs []string) (release func(), ok bool) {
	l := h.cfg.RateLimiter
	if l == nil {
		return noRelease, true
	}
	ep, op, limited := rt.rateOf(segs)
	if !limited {
		return noRelease, true
	}
	key, known := h.rateKey(r)
	if !known {
		return noRelease, true
	}
	release, refused := l.Allow(key, ep, op)
	if refused == nil {
		return release, true
	}
	auth.CountRefused(http.StatusTooManyRequests, refused.Reason)
	writeRateRefusal(w, refused, op == ratelimit.OpenAI)
	return nil, false
}

// rateKey is the key id r's budget is kept under, and whether r is limited
// at all: the caller's key id from r's context. A request without a caller
// is on a public or worker route, which has no budget.
func (h *Server) rateKey(r *http.Request) (string, bool) {
	if c, ok := auth.FromContext(r.Context()); ok {
		return c.KeyID, true
	}
	return "", false
}

func noRelease() {}

// writeRateRefusal answers 429 with Retry-After (whole seconds) and
// {"error","reason","retryAfterSeconds"}; on the OpenAI route "error" is
// OpenAI's error object (type rate_limit_error), which OpenAI's clients
// read, beside the same reason and retryAfterSeconds.
func writeRateRefusal(w http.ResponseWriter, ref *ratelimit.Refusal, openAI bool) {
	secs := ref.RetryAfterSeconds()
	body := map[string]any{"error": ref.Error(), "reason": ref.Reason, "retryAfterSeconds": secs}
	if openAI {
		body["error"] = map[string]any{"message": ref.Error(), "type": "rate_limit_error", "code": http.StatusTooManyRequests}
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write(b)
}
