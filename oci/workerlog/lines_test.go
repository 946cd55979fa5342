package workerlog

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/logindex"
)

// TestLines: the backlog is the lines of the log's last maxTail bytes
// (a line cut by the limit is left out), from the first written since a
// time; held back, an unfinished last line is left to the follow.
func TestLines(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name        string
		log         string
		marks       []int64 // offsets marked at t0+1s, t0+2s, ...
		maxTail     int64
		since       time.Time
		holdPartial bool
		want        []string
		follow      string // what a follow then sends
	}{
		{name: "all", log: "a\nb\nc\n", maxTail: 1 << 20, want: []string{"a", "b", "c"}},
		{name: "tail on a line start", log: "aaaa\nbb\ncc\n", maxTail: 3, want: []string{"cc"}},
		{name: "tail inside a line", log: "aaaa\nbb\ncc\n", maxTail: 4, want: []string{"cc"}},
		{name: "unfinished line", log: "x\ny", maxTail: 1 << 20, want: []string{"x", "y"}},
		{name: "unfinished line held", log: "x\ny", maxTail: 1 << 20, holdPartial: true, want: []string{"x"}, follow: "y"},
		{name: "since", log: "old\nnew\nnewer\n", marks: []int64{4, 8, 14}, maxTail: 1 << 20, since: t0.Add(2 * time.Second), want: []string{"new", "newer"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "w-1.log")
			if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
				t.Fatal(err)
			}
			if len(tt.marks) > 0 {
				rec := logindex.Open(path)
				for i, off := range tt.marks {
					if err := os.Truncate(path, off); err != nil {
						t.Fatal(err)
					}
					if err := rec.Sample(t0.Add(time.Duration(i+1) * time.Second)); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			l := OpenLines(path, tt.maxTail, tt.since, tt.holdPartial)
			if l == nil {
				t.Fatal("no lines")
			}
			defer l.Close()
			var got []string
			for line, _, ok := l.Line(); ok; line, _, ok = l.Line() {
				got = append(got, string(line))
				l.Next()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines %q; want %q", got, tt.want)
			}
			lf := l.Follow()
			defer lf.Close()
			var out bytes.Buffer
			if err := lf.Poll(&out, nil); err != nil || out.String() != tt.follow {
				t.Errorf("follow sent %q (%v); want %q", out.String(), err, tt.follow)
			}
		})
	}
	if l := OpenLines(filepath.Join(t.TempDir(), "none.log"), 1<<20, time.Time{}, false); l != nil {
		t.Error("a missing log opened")
	}
	if l := OpenLines(os.DevNull, 1<<20, time.Time{}, false); l != nil {
		t.Error("/dev/null opened as a log")
	}
}
