package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func TestRenderProgress(t *testing.T) {
	tests := []struct {
		label       string
		sent, total int64
		elapsed     time.Duration
		want        string
	}{
		{"echo.tar", 0, 4 << 20, 0,
			"Uploading echo.tar  [>                       ]   0%  0 B / 4 MiB"},
		{"echo.tar", 1 << 20, 4 << 20, time.Second,
			"Uploading echo.tar  [======>                 ]  25%  1 MiB / 4 MiB  1 MiB/s"},
		{"echo.tar", 2 << 20, 4 << 20, 2 * time.Second,
			"Uploading echo.tar  [============>           ]  50%  2 MiB / 4 MiB  1 MiB/s"},
		{"echo.tar", 4 << 20, 4 << 20, 3 * time.Second,
			"Uploading echo.tar  [========================] 100%  4 MiB / 4 MiB  1.3 MiB/s"},
		{"big.tar", 3 << 30, 1 << 40, time.Minute, // 0.29 %
			"Uploading big.tar  [>                       ]   0%  3 GiB / 1 TiB  51.2 MiB/s"},
		{"over.tar", 5 << 20, 4 << 20, time.Second, // more than announced: capped
			"Uploading over.tar  [========================] 100%  5 MiB / 4 MiB  5 MiB/s"},
		{"layout", 1536, -1, time.Second, // size unknown: no bar
			"Uploading layout  1.5 KiB  1.5 KiB/s"},
		{"a-very-long-archive-name-indeed.tar.gz", 1, 2, 0,
			"Uploading a-very-long-archi...  [============>           ]  50%  1 B / 2 B"},
	}
	for _, tt := range tests {
		got := renderProgress(tt.label, tt.sent, tt.total, tt.elapsed)
		if got != tt.want {
			t.Errorf("renderProgress(%q, %d, %d, %s)\n got %q\nwant %q", tt.label, tt.sent, tt.total, tt.elapsed, got, tt.want)
		}
		if len([]rune(got)) > 80 {
			t.Errorf("line of %d columns: %q", len([]rune(got)), got)
		}
	}
}

// TestProgressBarRedraws checks the reader wrapper: at most one redraw per
// 100 ms, one when complete, and the closing line.
func TestProgressBarRedraws(t *testing.T) {
	var out bytes.Buffer
	clock := testClock
	now := func() time.Time { return clock }
	p := newProgressBar(&out, "echo.tar", 4<<20, now)
	r := p.Reader(strings.NewReader(strings.Repeat("x", 4<<20)))
	read := func(n int, advance time.Duration) {
		t.Helper()
		clock = clock.Add(advance)
		if _, err := io.ReadFull(r, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	read(1<<20, time.Second)           // first read: drawn
	read(512<<10, 50*time.Millisecond) // too soon: not drawn
	read(512<<10, 60*time.Millisecond) // 110 ms after the last draw: drawn
	read(1<<20, time.Millisecond)      // too soon
	read(1<<20, time.Millisecond)      // complete: drawn at once
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
	p.finish(true)
	p.finish(false) // once only
	p.add(10)       // after finish: nothing
	want := "\rUploading echo.tar  [======>                 ]  25%  1 MiB / 4 MiB  1 MiB/s\x1b[K" +
		"\rUploading echo.tar  [============>           ]  50%  2 MiB / 4 MiB  1.8 MiB/s\x1b[K" +
		"\rUploading echo.tar  [========================] 100%  4 MiB / 4 MiB  3.6 MiB/s  importing...\x1b[K" +
		"\rUploading echo.tar  [========================] 100%  4 MiB / 4 MiB  3.6 MiB/s\x1b[K\n"
	if out.String() != want {
		t.Errorf("bar:\n%q\nwant\n%q", out.String(), want)
	}

	// A failed upload ends the line so that the error starts on its own.
	out.Reset()
	p = newProgressBar(&out, "x.tar", 10, now)
	p.Reader(strings.NewReader("abc")).Read(make([]byte, 3))
	p.finish(false)
	if want := "\rUploading x.tar  [=======>                ]  30%  3 B / 10 B\x1b[K\n"; out.String() != want {
		t.Errorf("failed upload: %q, want %q", out.String(), want)
	}
	// Nothing drawn, nothing to end.
	out.Reset()
	p = newProgressBar(&out, "x.tar", 10, now)
	p.finish(true)
	if out.Len() != 0 {
		t.Errorf("finish without a draw wrote %q", out.String())
	}
}

// TestImportProgressOnlyOnTerminal: the bar is drawn on a terminal only,
// and never with --json or --quiet.
func TestImportProgressOnlyOnTerminal(t *testing.T) {
	dir, _ := imageFixtures(t)
	fd := newFakeDaemon(t)
	for _, tt := range []struct {
		tty   bool
		flags []string
		bar   bool
	}{
		{tty: false},
		{tty: true, bar: true},
		{tty: true, flags: []string{"--json"}},
		{tty: true, flags: []string{"-q"}},
		{tty: true, flags: []string{"--quiet"}},
	} {
		var stdout, stderr bytes.Buffer
		env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}
		a := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
		a.progress = tt.tty
		a.now = func() time.Time { return testClock }
		args := append([]string{"image", "import", dir + "/echo.tar"}, tt.flags...)
		if code := a.execute(t.Context(), args); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
		hasBar := strings.Contains(stderr.String(), "Uploading echo.tar  [")
		if hasBar != tt.bar || (!tt.bar && stderr.Len() != 0) {
			t.Errorf("tty %v %v: stderr %q", tt.tty, tt.flags, stderr.String())
		}
		if tt.bar && !strings.HasSuffix(stderr.String(), "\x1b[K\n") {
			t.Errorf("the bar's line is not ended: %q", stderr.String())
		}
	}
}
