package httpapi

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
)

// writeLog writes a worker log whose lines were written at the given
// seconds past t0, with its index (one mark per line).
func writeLog(t *testing.T, dir, id string, t0 time.Time, lines []string, secs []int) string {
	t.Helper()
	path := filepath.Join(dir, id+".log")
	var log, idx strings.Builder
	for i, l := range lines {
		log.WriteString(l + "\n")
		idx.WriteString(strconv.FormatInt(t0.Add(time.Duration(secs[i])*time.Second).UnixNano(), 10) + " " + strconv.Itoa(log.Len()) + "\n")
	}
	if err := os.WriteFile(path, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".idx", []byte(idx.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMergeLogs(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	a := writeLog(t, dir, "w-aa", t0, []string{"a1", "a2", "a3"}, []int{1, 3, 5})
	b := writeLog(t, dir, "w-bb", t0, []string{"b1", "b2"}, []int{2, 4})
	for _, tc := range []struct {
		name string
		opts logOptions
		want string
	}{
		{"interleaved", logOptions{}, "w-aa | a1\nw-bb | b1\nw-aa | a2\nw-bb | b2\nw-aa | a3\n"},
		{"since", logOptions{since: t0.Add(3 * time.Second)}, "w-aa | a2\nw-bb | b2\nw-aa | a3\n"},
		{"since after all", logOptions{since: t0.Add(time.Hour)}, ""},
		{"timestamps", logOptions{timestamps: true, since: t0.Add(5 * time.Second)},
			"w-aa | 2026-12-04T10:00:05.000000000Z a3\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srcs := []*logSource{openLogSource("w-aa", a, tc.opts.since, false), openLogSource("w-bb", b, tc.opts.since, false)}
			var out bytes.Buffer
			if err := mergeLogs(&out, srcs, tc.opts); err != nil {
				t.Fatal(err)
			}
			for _, s := range srcs {
				s.close()
			}
			if out.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}

// A log without an index (written before there were marks) keeps its
// file order, with the file's time.
func TestMergeLogsNoIndex(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w-cc.log")
	os.WriteFile(path, []byte("c1\nc2 partial"), 0o600)
	s := openLogSource("w-cc", path, time.Time{}, false)
	defer s.close()
	var out bytes.Buffer
	if s := openLogSource("w-dd", filepath.Join(dir, "none.log"), time.Time{}, false); s != nil {
		t.Errorf("a missing log opened")
	}
	if err := mergeLogs(&out, []*logSource{s}, logOptions{}); err != nil {
		t.Fatal(err)
	}
	if want := "w-cc | c1\nw-cc | c2 partial\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}

	// Followed, the unfinished line is left to the follow, which starts
	// where it starts.
	h := openLogSource("w-cc", path, time.Time{}, true)
	defer h.close()
	out.Reset()
	if err := mergeLogs(&out, []*logSource{h}, logOptions{}); err != nil {
		t.Fatal(err)
	}
	if want := "w-cc | c1\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	lf := h.lines.Follow()
	var rest bytes.Buffer
	if err := lf.Poll(&rest, nil); err != nil || rest.String() != "c2 partial" {
		t.Errorf("the follow sent %q (%v); want %q, from offset 3", rest.String(), err, "c2 partial")
	}
	lf.Close()
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 12, 4, 10, 0, 0, 5, time.UTC)
	p := &prefixWriter{id: "w-1", out: &out, opts: logOptions{timestamps: true}, now: now}
	p.Write([]byte("one\ntw"))
	p.Write([]byte("o\nthr"))
	p.end()
	want := "w-1 | 2026-12-04T10:00:00.000000005Z one\nw-1 | 2026-12-04T10:00:00.000000005Z two\nw-1 | 2026-12-04T10:00:00.000000005Z thr\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}

	// A line without end is sent in pieces of limits.LogLine.
	out.Reset()
	p = &prefixWriter{id: "w-2", out: &out}
	long := bytes.Repeat([]byte("x"), limits.LogLine+10)
	p.Write(long[:100])
	p.Write(long[100:])
	if len(p.partial) != 10 {
		t.Errorf("kept %d bytes, want 10", len(p.partial))
	}
	if got := strings.Count(out.String(), "\n"); got != 1 {
		t.Errorf("%d lines sent, want 1", got)
	}

	// Lines read before since are left out.
	out.Reset()
	p = &prefixWriter{id: "w-3", out: &out, opts: logOptions{since: now.Add(time.Second)}, now: now}
	p.Write([]byte("early\n"))
	if out.Len() != 0 {
		t.Errorf("sent %q before since", out.String())
	}
}

func TestParseLogOptions(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		q       string
		want    logOptions
		wantErr string
	}{
		{"", logOptions{}, ""},
		{"follow=1&timestamps=true", logOptions{follow: true, timestamps: true}, ""},
		{"since=10m", logOptions{since: now.Add(-10 * time.Minute)}, ""},
		{"since=2026-12-04T09:00:00Z", logOptions{since: now.Add(-time.Hour)}, ""},
		{"since=1700000000", logOptions{since: time.Unix(1700000000, 0)}, ""},
		{"since=yesterday", logOptions{}, "since: want"},
		{"since=-5m", logOptions{}, "since: want"},
		{"follow=maybe", logOptions{}, "follow: want 1 or 0"},
		{"timestamps=2", logOptions{}, "timestamps: want 1 or 0"},
	} {
		q := map[string][]string{}
		for _, kv := range strings.Split(tc.q, "&") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				q[k] = []string{v}
			}
		}
		got, err := parseLogOptions(q, now)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.q, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.follow != tc.want.follow || got.timestamps != tc.want.timestamps || !got.since.Equal(tc.want.since) {
			t.Errorf("%q: got %+v, %v; want %+v", tc.q, got, err, tc.want)
		}
	}
}

// A log past maxLogTail is read from its last maxLogTail bytes, from the
// first whole line there, and a line longer than limits.LogLine comes in
// pieces.
func TestLogSourceBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w-ee.log")
	var b bytes.Buffer
	for i := 0; b.Len() < 2*maxLogTail; i++ {
		b.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	b.WriteString(strings.Repeat("y", limits.LogLine+1) + "\n")
	os.WriteFile(path, b.Bytes(), 0o600)
	s := openLogSource("w-ee", path, time.Time{}, false)
	defer s.close()
	var out bytes.Buffer
	if err := mergeLogs(&out, []*logSource{s}, logOptions{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "w-ee | line ") || int64(out.Len()) > maxLogTail+int64(len(lines))*8 {
		t.Errorf("first line %q, %d bytes sent", lines[0], out.Len())
	}
	n := len(lines)
	if lines[n-2] != "w-ee | "+strings.Repeat("y", limits.LogLine) || lines[n-1] != "w-ee | y" {
		t.Errorf("the long line: %d and %d bytes", len(lines[n-2]), len(lines[n-1]))
	}
}

// BenchmarkEndpointLogMerge: merging 4 workers' 1 MiB logs, against
// copying the same files whole (the same-run baseline).
func BenchmarkEndpointLogMerge(b *testing.B) {
	dir := b.TempDir()
	t0 := time.Now()
	var paths []string
	var size int64
	for w := range 4 {
		var log, idx strings.Builder
		for i := 0; log.Len() < maxLogTail-100; i++ {
			log.WriteString("time=2026-12-04T10:00:00Z level=INFO msg=\"job done\" job=" + strconv.Itoa(i) + "\n")
			if i%50 == 0 {
				idx.WriteString(strconv.FormatInt(t0.Add(time.Duration(i*4+w)*time.Millisecond).UnixNano(), 10) + " " + strconv.Itoa(log.Len()) + "\n")
			}
		}
		p := filepath.Join(dir, "w-"+strconv.Itoa(w)+".log")
		os.WriteFile(p, []byte(log.String()), 0o600)
		os.WriteFile(p+".idx", []byte(idx.String()), 0o600)
		paths = append(paths, p)
		size += int64(log.Len())
	}
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			for _, p := range paths {
				f, _ := os.Open(p)
				io.Copy(io.Discard, f)
				f.Close()
			}
		}
	})
	b.Run("merge", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			var srcs []*logSource
			for i, p := range paths {
				srcs = append(srcs, openLogSource("w-"+strconv.Itoa(i), p, time.Time{}, false))
			}
			mergeLogs(bufio.NewWriter(io.Discard), srcs, logOptions{timestamps: true})
			for _, s := range srcs {
				s.close()
			}
		}
	})
}
