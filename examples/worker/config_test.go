package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	full := map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":     "http://d/v2/ep/job-take/$ID?gpu=X&x=$RUNPOD_POD_ID",
		"RUNPOD_WEBHOOK_POST_OUTPUT": "http://d/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_POST_STREAM": "http://d/v2/ep/job-stream/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_PING":        "http://d/v2/ep/ping/$RUNPOD_POD_ID?gpu=X",
		"RUNPOD_AI_API_KEY":          "k",
		"RUNPOD_POD_ID":              "w1",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "-" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config, warnings []string)
		wantErr string
	}{
		{"substitution and defaults", full, func(t *testing.T, c Config, w []string) {
			// $RUNPOD_POD_ID in the take template is not replaced (docs/compat.md,
			// Worker environment).
			eq(t, "take", c.TakeURL, "http://d/v2/ep/job-take/w1?gpu=X&x=$RUNPOD_POD_ID")
			eq(t, "done", c.DoneTemplate, "http://d/v2/ep/job-done/w1/$ID?gpu=X")
			eq(t, "stream", c.StreamTemplate, "http://d/v2/ep/job-stream/w1/$ID?gpu=X")
			eq(t, "ping", c.PingURL, "http://d/v2/ep/ping/w1?gpu=X")
			eq(t, "interval", c.PingInterval, 10*time.Second)
			eq(t, "retry", c.RetryDelay, 2*time.Second)
			eq(t, "concurrency", c.Concurrency, 1)
			eq(t, "hostname", c.Hostname, "unknown")
			eq(t, "take timeout", c.TakeTimeout, 90*time.Second)
			eq(t, "429 pause", c.RateLimitPause, 5*time.Second)
			eq(t, "error pause", c.TakeErrorPause, 100*time.Millisecond)
			eq(t, "stop pause", c.StopPollPause, time.Second)
			eq(t, "warnings", len(w), 0)
		}, ""},
		{"overrides", with("RUNPOD_PING_INTERVAL", "250", "WORKER_RETRY_DELAY_MS", "10", "WORKER_CONCURRENCY", "4", "RUNPOD_POD_HOSTNAME", "h"),
			func(t *testing.T, c Config, _ []string) {
				eq(t, "interval", c.PingInterval, 250*time.Millisecond)
				eq(t, "retry", c.RetryDelay, 10*time.Millisecond)
				eq(t, "concurrency", c.Concurrency, 4)
				eq(t, "hostname", c.Hostname, "h")
			}, ""},
		{"no key: no pings", with("RUNPOD_AI_API_KEY", "-"), func(t *testing.T, c Config, w []string) {
			eq(t, "ping", c.PingURL, "")
			eq(t, "key", c.APIKey, "")
			eq(t, "warnings", len(w), 1)
		}, ""},
		{"no pod id: random id, no pings", with("RUNPOD_POD_ID", "-"), func(t *testing.T, c Config, _ []string) {
			eq(t, "ping", c.PingURL, "")
			eq(t, "id length", len(c.WorkerID), 36)
			eq(t, "take", c.TakeURL, "http://d/v2/ep/job-take/"+c.WorkerID+"?gpu=X&x=$RUNPOD_POD_ID")
		}, ""},
		{"no ping URL", with("RUNPOD_WEBHOOK_PING", "-"), func(t *testing.T, c Config, _ []string) {
			eq(t, "ping", c.PingURL, "")
		}, ""},
		{"missing result URLs use the SDK placeholders", with("RUNPOD_WEBHOOK_POST_OUTPUT", "-", "RUNPOD_WEBHOOK_POST_STREAM", "-"),
			func(t *testing.T, c Config, w []string) {
				eq(t, "done", c.DoneTemplate, "JOB_DONE_URL")
				eq(t, "stream", c.StreamTemplate, "JOB_STREAM_URL")
				eq(t, "warnings", len(w), 2)
			}, ""},
		{"take URL without /job-take/ warns", with("RUNPOD_WEBHOOK_GET_JOB", "http://d/take/$ID?a=1"),
			func(t *testing.T, c Config, w []string) {
				eq(t, "warnings", len(w), 1)
				eq(t, "stop URL", stopURL(c.TakeURL), "")
			}, ""},
		{"no take URL", with("RUNPOD_WEBHOOK_GET_JOB", "-"), nil, "RUNPOD_WEBHOOK_GET_JOB"},
		{"empty take URL", with("RUNPOD_WEBHOOK_GET_JOB", ""), nil, "RUNPOD_WEBHOOK_GET_JOB"},
		{"bad concurrency", with("WORKER_CONCURRENCY", "0"), nil, "WORKER_CONCURRENCY"},
		{"bad ping interval", with("RUNPOD_PING_INTERVAL", "10s"), nil, "RUNPOD_PING_INTERVAL"},
		{"bad retry delay", with("WORKER_RETRY_DELAY_MS", "-5"), nil, "WORKER_RETRY_DELAY_MS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, w, err := LoadConfig(lookupIn(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c, w)
		})
	}
	if _, _, err := LoadConfig(lookupIn(with("RUNPOD_WEBHOOK_GET_JOB", "-"))); !errors.Is(err, errNoTakeURL) {
		t.Errorf("missing take URL: %v, want errNoTakeURL", err)
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestPyQuote(t *testing.T) {
	// Expected values are Python's json.dumps output.
	cases := map[string]string{
		"plain":               `"plain"`,
		"é\n😀\x7f\"\\\x01<>&": `"\u00e9\n\ud83d\ude00\u007f\"\\\u0001<>&"`,
		"\t\r\b\f":            `"\t\r\b\f"`,
	}
	for in, want := range cases {
		if got := pyQuote(in); got != want {
			t.Errorf("pyQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got, want := pyDumps([][2]string{{"a", "b"}, {"c", "d"}}), `{"a": "b", "c": "d"}`; got != want {
		t.Errorf("pyDumps = %s, want %s", got, want)
	}
}
