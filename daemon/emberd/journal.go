package emberd

// Logging to the systemd journal: each record becomes one journal entry
// whose slog attributes are fields of their own (endpoint -> ENDPOINT,
// job -> JOB, worker -> WORKER), so `journalctl -u emberd ENDPOINT=...`
// selects one endpoint's lines.

import (
	"context"
	"encoding"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewLogger returns emberd's logger at level: entries with structured
// fields to the systemd journal when emberd runs as a systemd service that
// logs to a reachable journald, else text lines on stderr.
func NewLogger(level slog.Leveler) *slog.Logger {
	stderr := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if useJournal(os.Getenv, journal.StderrIsJournalStream, journal.Enabled) {
		return slog.New(newJournalHandler(level, journal.Send, stderr))
	}
	return slog.New(stderr)
}

// useJournal decides where logs go. With JOURNAL_STREAM set (systemd
// connected stdout or stderr to the journal), the journal is used only if
// stderr is that stream: a unit that sent stderr elsewhere
// (StandardError=file:...) keeps its text lines there. Without it, a
// systemd service (INVOCATION_ID) logs to the journal. Either way journald
// must be reachable.
func useJournal(getenv func(string) string, stderrIsJournal func() (bool, error), journalUp func() bool) bool {
	if getenv("JOURNAL_STREAM") != "" {
		ok, err := stderrIsJournal()
		return err == nil && ok && journalUp()
	}
	return getenv("INVOCATION_ID") != "" && journalUp()
}

// journalSender is journal.Send.
type journalSender func(message string, priority journal.Priority, vars map[string]string) error

// journalAttr is an attribute given to With, under the groups open then.
type journalAttr struct {
	groups []string
	attr   slog.Attr
}

// journalHandler is a slog.Handler that writes to journald. An entry the
// journal refuses is written by fallback (text on stderr) instead.
type journalHandler struct {
	level    slog.Leveler
	send     journalSender
	fallback slog.Handler
	attrs    []journalAttr
	groups   []string
}

func newJournalHandler(level slog.Leveler, send journalSender, fallback slog.Handler) *journalHandler {
	return &journalHandler{level: level, send: send, fallback: fallback}
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	msg, pri, fields := journalEntry(r, h.attrs, h.groups)
	if err := h.send(msg, pri, fields); err != nil {
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	c := *h
	c.attrs = make([]journalAttr, len(h.attrs), len(h.attrs)+len(as))
	copy(c.attrs, h.attrs)
	for _, a := range as {
		c.attrs = append(c.attrs, journalAttr{groups: h.groups, attr: a})
	}
	c.fallback = h.fallback.WithAttrs(as)
	return &c
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(h.groups[:len(h.groups):len(h.groups)], name)
	c.fallback = h.fallback.WithGroup(name)
	return &c
}

// Journal fields emberd sets itself; attributes of these names become
// ATTR_NAME instead.
var reservedFields = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true,
	"CODE_FILE": true, "CODE_LINE": true, "CODE_FUNC": true,
}

// journalEntry turns a record into a journal entry: the MESSAGE text (the
// message, then the attributes as key=value like the text handler, so
// plain `journalctl` output keeps the details), the PRIORITY, and the
// other fields: SYSLOG_IDENTIFIER, CODE_FILE/CODE_LINE/CODE_FUNC when the
// record has a source, and one field per attribute (see journalFieldName).
// It is pure: the field mapping is tested without journald.
func journalEntry(r slog.Record, handlerAttrs []journalAttr, groups []string) (string, journal.Priority, map[string]string) {
	fields := map[string]string{"SYSLOG_IDENTIFIER": "emberd"}
	var text strings.Builder
	text.WriteString(r.Message)
	for _, ha := range handlerAttrs {
		addAttr(fields, &text, ha.groups, ha.attr)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(fields, &text, groups, a)
		return true
	})
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if f.File != "" {
			fields["CODE_FILE"] = f.File
			fields["CODE_LINE"] = strconv.Itoa(f.Line)
		}
		if f.Function != "" {
			fields["CODE_FUNC"] = f.Function
		}
	}
	return text.String(), journalPriority(r.Level), fields
}

// addAttr adds a (resolved) attribute under groups: a group's members one
// by one, with the group's name as a prefix (an empty group name inlines).
func addAttr(fields map[string]string, text *strings.Builder, groups []string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		sub := groups
		if a.Key != "" {
			sub = append(groups[:len(groups):len(groups)], a.Key)
		}
		for _, m := range a.Value.Group() {
			addAttr(fields, text, sub, m)
		}
		return
	}
	if a.Key == "" {
		return
	}
	v := journalValue(a.Value)
	if name := journalFieldName(groups, a.Key); name != "" {
		fields[name] = v
	}
	text.WriteByte(' ')
	for _, g := range groups {
		text.WriteString(g)
		text.WriteByte('.')
	}
	text.WriteString(a.Key)
	text.WriteByte('=')
	text.WriteString(quoteIfNeeded(v))
}

// journalFieldName maps an attribute key under its groups to a journal
// field name: the groups and key joined by "_", upper-cased, every
// character but A-Z, 0-9 and _ turned into _ (http.status -> HTTP_STATUS,
// job-id -> JOB_ID); leading underscores (fields journald reserves) are
// dropped; a name starting with a digit or one of reservedFields gets the
// prefix ATTR_; at most 64 characters. "" when nothing is left.
func journalFieldName(groups []string, key string) string {
	var b strings.Builder
	for _, part := range append(groups[:len(groups):len(groups)], key) {
		if b.Len() > 0 {
			b.WriteByte('_')
		}
		for _, c := range part {
			switch {
			case c >= 'a' && c <= 'z':
				b.WriteRune(c - 'a' + 'A')
			case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
				b.WriteRune(c)
			default:
				b.WriteByte('_')
			}
		}
	}
	name := strings.TrimLeft(b.String(), "_")
	if name == "" {
		return ""
	}
	if reservedFields[name] || (name[0] >= '0' && name[0] <= '9') {
		name = "ATTR_" + name
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// journalValue is an attribute value as text.
func journalValue(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return x.Error()
		case encoding.TextMarshaler:
			if b, err := x.MarshalText(); err == nil {
				return string(b)
			}
		case []byte:
			return string(x)
		}
		return fmt.Sprintf("%+v", v.Any())
	}
	return v.String()
}

// journalPriority maps a level to syslog priorities: debug 7, info 6,
// warn 4, error 3 (levels in between round down).
func journalPriority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// quoteIfNeeded quotes a value for the MESSAGE text as the text handler
// does: when it is empty or has spaces, quotes, '=' or unprintable runes.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range s {
		if c == ' ' || c == '"' || c == '=' || c == utf8.RuneError || !unicode.IsPrint(c) {
			return strconv.Quote(s)
		}
	}
	return s
}
