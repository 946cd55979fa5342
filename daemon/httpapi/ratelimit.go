package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
)

// anonymousKey is the bucket key of a request whose transport put no
// caller in its context (auth.FromContext).
const anonymousKey = "unauthenticated"

// rateOp says which limited operation a request is, and on which
// endpoint: RunPod's client routes under /v2/{endpoint}/ (status-sync
// counts as status, retry as run), the OpenAI route, and their /v1 twins
// under /v1/endpoints/{endpoint}/. Everything else (the worker API,
// /health, endpoint and key management, probes) is not limited here.
func rateOp(segs []string) (ep string, op ratelimit.Op, ok bool) {
	switch {
	case len(segs) >= 3 && segs[0] == "v2":
		ep = segs[1]
		switch segs[2] {
		case "run":
			op = ratelimit.Run
		case "runsync":
			op = ratelimit.RunSync
		case "status", "status-sync":
			op = ratelimit.Status
		case "stream":
			op = ratelimit.Stream
		case "cancel":
			op = ratelimit.Cancel
		case "retry":
			op = ratelimit.Run
		case "purge-queue":
			op = ratelimit.PurgeQueue
		case "openai":
			op = ratelimit.OpenAI
		default:
			return "", 0, false
		}
		return ep, op, true
	case len(segs) >= 4 && segs[0] == "v1" && segs[1] == "endpoints":
		ep = segs[2]
		rest := segs[3:]
		switch {
		case len(rest) == 1 && rest[0] == "jobs":
			return ep, ratelimit.Run, true
		case len(rest) == 1 && rest[0] == "jobs:sync":
			return ep, ratelimit.RunSync, true
		case len(rest) == 1 && rest[0] == "queue:purge":
			return ep, ratelimit.PurgeQueue, true
		case len(rest) == 2 && rest[0] == "jobs":
			switch {
			case strings.HasSuffix(rest[1], ":cancel"):
				return ep, ratelimit.Cancel, true
			case strings.HasSuffix(rest[1], ":retry"):
				return ep, ratelimit.Run, true
			}
			return ep, ratelimit.Status, true
		case len(rest) == 3 && rest[0] == "jobs" && rest[2] == "stream":
			return ep, ratelimit.Stream, true
		}
	}
	return "", 0, false
}

// limitRate applies Config.RateLimiter to the request. It must run once the
// caller is known: it keys the request's budget on the caller's key id in
// r's context (rateKey). It returns release, to be called when the request
// ends, and true; or, over a limit, answers 429 with Retry-After and
// returns false.
func (h *Server) limitRate(w http.ResponseWriter, r *http.Request, segs []string) (release func(), ok bool) {
	l := h.cfg.RateLimiter
	if l == nil {
		return noRelease, true
	}
	ep, op, limited := rateOp(segs)
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
// (authentication on this branch is still done per route, after the
// limiter) is limited only when it carries a valid key, as
// "unauthenticated", so that one with no key or a wrong one is still
// answered 401 by its route and spends nobody's budget. Once
// authentication puts the caller in the context before limitRate runs,
// this fallback is `return "", false`.
func (h *Server) rateKey(r *http.Request) (string, bool) {
	if c, ok := auth.FromContext(r.Context()); ok {
		return c.KeyID, true
	}
	return anonymousKey, h.adminOK(r)
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
