package emberd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/auth"
)

func TestJournalFieldName(t *testing.T) {
	for _, tc := range []struct {
		groups []string
		key    string
		want   string
	}{
		{nil, "endpoint", "ENDPOINT"},
		{nil, "job", "JOB"},
		{nil, "worker", "WORKER"},
		{nil, "err", "ERR"},
		{nil, "data_dir", "DATA_DIR"},
		{nil, "job-id", "JOB_ID"},
		{nil, "http.status", "HTTP_STATUS"},
		{[]string{"http"}, "status", "HTTP_STATUS"},
		{[]string{"a", "b"}, "c", "A_B_C"},
		{nil, "Mixed Case", "MIXED_CASE"},
		{nil, "_private", "PRIVATE"},
		{nil, "__", ""},
		{nil, "", ""},
		{nil, "2xx", "ATTR_2XX"},
		{nil, "message", "ATTR_MESSAGE"},
		{nil, "priority", "ATTR_PRIORITY"},
		{nil, "code_line", "ATTR_CODE_LINE"},
		{nil, "syslog_identifier", "ATTR_SYSLOG_IDENTIFIER"},
		{nil, "größe", "GR__E"},
		{nil, strings.Repeat("x", 80), strings.Repeat("X", 64)},
	} {
		if got := journalFieldName(tc.groups, tc.key); got != tc.want {
			t.Errorf("journalFieldName(%q, %q) = %q, want %q", tc.groups, tc.key, got, tc.want)
		}
	}
}

func TestJournalPriority(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  journal.Priority
	}{
		{slog.LevelDebug - 4, journal.PriDebug},
		{slog.LevelDebug, journal.PriDebug},
		{slog.LevelInfo, journal.PriInfo},
		{slog.LevelInfo + 2, journal.PriInfo},
		{slog.LevelWarn, journal.PriWarning},
		{slog.LevelError, journal.PriErr},
		{slog.LevelError + 4, journal.PriErr},
	} {
		if got := journalPriority(tc.level); got != tc.want {
			t.Errorf("journalPriority(%v) = %d, want %d", tc.level, got, tc.want)
		}
	}
}

type tmarsh struct{}

func (tmarsh) MarshalText() ([]byte, error) { return []byte("as-text"), nil }

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved") }

func TestJournalEntry(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	base := map[string]string{"SYSLOG_IDENTIFIER": "emberd"}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		level    slog.Level
		msg      string
		attrs    []slog.Attr
		handler  []journalAttr
		groups   []string
		wantMsg  string
		wantPri  journal.Priority
		wantVars map[string]string
	}{
		{
			name: "plain", level: slog.LevelInfo, msg: "emberd ready",
			wantMsg: "emberd ready", wantPri: journal.PriInfo, wantVars: base,
		},
		{
			name: "endpoint job worker", level: slog.LevelWarn, msg: "job re-queued",
			attrs:   []slog.Attr{slog.String("endpoint", "ep1"), slog.String("job", "j-1"), slog.String("worker", "w-9")},
			wantMsg: "job re-queued endpoint=ep1 job=j-1 worker=w-9", wantPri: journal.PriWarning,
			wantVars: with("ENDPOINT", "ep1", "JOB", "j-1", "WORKER", "w-9"),
		},
		{
			name: "kinds", level: slog.LevelError, msg: "close scheduler",
			attrs: []slog.Attr{
				slog.Any("err", errors.New("disk on fire")),
				slog.Int("count", 3), slog.Bool("ok", false), slog.Float64("ratio", 0.5),
				slog.Duration("after", 1500*time.Millisecond), slog.Time("at", at),
				slog.Any("text", tmarsh{}), slog.Any("raw", []byte("bytes")), slog.Any("lazy", valuer{}),
				slog.Any("list", []int{1, 2}),
			},
			wantMsg: `close scheduler err="disk on fire" count=3 ok=false ratio=0.5 after=1.5s at=2025-03-04T05:06:07.000000008Z text=as-text raw=bytes lazy=resolved list="[1 2]"`,
			wantPri: journal.PriErr,
			wantVars: with("ERR", "disk on fire", "COUNT", "3", "OK", "false", "RATIO", "0.5", "AFTER", "1.5s",
				"AT", "2025-03-04T05:06:07.000000008Z", "TEXT", "as-text", "RAW", "bytes", "LAZY", "resolved", "LIST", "[1 2]"),
		},
		{
			name: "groups", level: slog.LevelDebug, msg: "request",
			attrs:   []slog.Attr{slog.Group("http", slog.Int("status", 200), slog.String("path", "/v2/x/run")), slog.Group("", slog.String("inlined", "yes"))},
			wantMsg: "request http.status=200 http.path=/v2/x/run inlined=yes", wantPri: journal.PriDebug,
			wantVars: with("HTTP_STATUS", "200", "HTTP_PATH", "/v2/x/run", "INLINED", "yes"),
		},
		{
			name: "handler attrs and open group", level: slog.LevelInfo, msg: "took",
			handler: []journalAttr{{attr: slog.String("endpoint", "ep1")}, {groups: []string{"req"}, attr: slog.String("id", "r1")}},
			groups:  []string{"req"},
			attrs:   []slog.Attr{slog.Int("n", 2)},
			wantMsg: "took endpoint=ep1 req.id=r1 req.n=2", wantPri: journal.PriInfo,
			wantVars: with("ENDPOINT", "ep1", "REQ_ID", "r1", "REQ_N", "2"),
		},
		{
			name: "reserved, empty and odd", level: slog.LevelInfo, msg: "odd",
			attrs:   []slog.Attr{slog.String("message", "shadow"), {}, slog.String("", "nokey"), slog.String("empty", ""), slog.String("multi", "a\nb")},
			wantMsg: `odd message=shadow empty="" multi="a\nb"`, wantPri: journal.PriInfo,
			wantVars: with("ATTR_MESSAGE", "shadow", "EMPTY", "", "MULTI", "a\nb"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := slog.NewRecord(at, tc.level, tc.msg, 0)
			r.AddAttrs(tc.attrs...)
			msg, pri, vars := journalEntry(r, tc.handler, tc.groups)
			if msg != tc.wantMsg {
				t.Errorf("MESSAGE\n got %q\nwant %q", msg, tc.wantMsg)
			}
			if pri != tc.wantPri {
				t.Errorf("PRIORITY %d, want %d", pri, tc.wantPri)
			}
			if !maps.Equal(vars, tc.wantVars) {
				t.Errorf("fields\n got %q\nwant %q", vars, tc.wantVars)
			}
		})
	}
}

func TestJournalEntrySource(t *testing.T) {
	var pcs [1]uintptr
	runtime.Callers(1, pcs[:])
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "here", pcs[0])
	_, _, vars := journalEntry(r, nil, nil)
	if !strings.HasSuffix(vars["CODE_FILE"], "journal_test.go") || vars["CODE_LINE"] == "" || !strings.HasSuffix(vars["CODE_FUNC"], "TestJournalEntrySource") {
		t.Errorf("source fields: %q", vars)
	}
}

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestJournalHandler(t *testing.T) {
	var got []sent
	var fallback bytes.Buffer
	failing := false
	send := func(msg string, pri journal.Priority, vars map[string]string) error {
		if failing {
			return errors.New("journald gone")
		}
		got = append(got, sent{msg, pri, vars})
		return nil
	}
	h := newJournalHandler(slog.LevelInfo, send, slog.NewTextHandler(&fallback, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := slog.New(h).With("endpoint", "ep1").WithGroup("w")

	log.Debug("filtered")
	log.Info("worker started", "worker", "w-1")
	if len(got) != 1 {
		t.Fatalf("sent %d entries, want 1: %+v", len(got), got)
	}
	e := got[0]
	if e.msg != "worker started endpoint=ep1 w.worker=w-1" || e.pri != journal.PriInfo || e.vars["ENDPOINT"] != "ep1" || e.vars["W_WORKER"] != "w-1" || e.vars["CODE_FILE"] == "" {
		t.Errorf("entry: %+v", e)
	}

	// The journal refuses: the record goes to the fallback with its attrs.
	failing = true
	log.Warn("still logged", "n", 1)
	if s := fallback.String(); !strings.Contains(s, `msg="still logged"`) || !strings.Contains(s, "endpoint=ep1") || !strings.Contains(s, "w.n=1") {
		t.Errorf("fallback output: %q", s)
	}
}

func TestUseJournal(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	yes := func() (bool, error) { return true, nil }
	no := func() (bool, error) { return false, nil }
	bad := func() (bool, error) { return false, errors.New("bad JOURNAL_STREAM") }
	up := func() bool { return true }
	down := func() bool { return false }
	for _, tc := range []struct {
		name   string
		getenv func(string) string
		stderr func() (bool, error)
		up     func() bool
		want   bool
	}{
		{"plain process", env(), no, up, false},
		{"stderr is the journal stream", env("JOURNAL_STREAM", "8:123", "INVOCATION_ID", "abc"), yes, up, true},
		{"journald not reachable", env("JOURNAL_STREAM", "8:123"), yes, down, false},
		{"stderr redirected elsewhere", env("JOURNAL_STREAM", "8:123", "INVOCATION_ID", "abc"), no, up, false},
		{"unparsable JOURNAL_STREAM", env("JOURNAL_STREAM", "x"), bad, up, false},
		{"service without a journal stream", env("INVOCATION_ID", "abc"), no, up, true},
		{"service, journald down", env("INVOCATION_ID", "abc"), no, down, false},
	} {
		if got := useJournal(tc.getenv, tc.stderr, tc.up); got != tc.want {
			t.Errorf("%s: useJournal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNewLoggerStderr(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	t.Setenv("INVOCATION_ID", "")
	l := NewLogger(slog.LevelWarn)
	if _, ok := l.Handler().(*slog.TextHandler); !ok {
		t.Errorf("outside systemd NewLogger uses %T, want the text handler", l.Handler())
	}
	if l.Enabled(context.Background(), slog.LevelInfo) || !l.Enabled(context.Background(), slog.LevelWarn) {
		t.Error("NewLogger ignores its level")
	}
}

// TestJournalAudit: an audit line (daemon/audit) becomes journal fields
// that `journalctl -u emberd AUDIT=true KEY_ID=...` selects on.
func TestJournalAudit(t *testing.T) {
	var got []sent
	send := func(msg string, pri journal.Priority, vars map[string]string) error {
		got = append(got, sent{msg, pri, vars})
		return nil
	}
	log := slog.New(newJournalHandler(slog.LevelInfo, send, slog.DiscardHandler))
	ctx := auth.WithCaller(context.Background(), auth.Caller{KeyID: "k-7f3a", Name: "ci bot", Scope: auth.Admin})
	audit.Record(ctx, log, audit.EndpointDelete, "ep1", errors.New("endpoint ep1 has 2 queued jobs"), slog.String("endpoint", "ep1"), slog.String("name", "sd"))
	if len(got) != 1 {
		t.Fatalf("sent %d entries", len(got))
	}
	e := got[0]
	want := map[string]string{"AUDIT": "true", "ACTION": "endpoint.delete", "OBJECT": "ep1", "KEY_ID": "k-7f3a", "KEY_NAME": "ci bot",
		"KEY_SCOPE": "admin", "OUTCOME": "error", "ERR": "endpoint ep1 has 2 queued jobs", "ENDPOINT": "ep1", "NAME": "sd"}
	for k, v := range want {
		if e.vars[k] != v {
			t.Errorf("%s = %q, want %q", k, e.vars[k], v)
		}
	}
	if e.pri != journal.PriWarning || !strings.HasPrefix(e.msg, "audit audit=true action=endpoint.delete object=ep1 key_id=k-7f3a key_name=\"ci bot\"") {
		t.Errorf("entry: %d %q", e.pri, e.msg)
	}
}
