package workerlog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestFollower: what each poll sends after the log was appended to,
// rotated in place (head cut, or copied whole and truncated, before or
// after everything was sent, and grown back past the offset), or renamed
// away and replaced.
func TestFollower(t *testing.T) {
	type step struct {
		change func(t *testing.T, path string)
		want   string
	}
	appendTo := func(s string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	// rotate copies the log's first head bytes (all, when head < 0) to
	// PATH.1 and leaves the rest, then appends more: runc's rotation.
	rotate := func(head int, more string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if head < 0 {
				head = len(b)
			}
			if err := os.WriteFile(path+".1", b[:head], 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(b[head:len(b):len(b)], more...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace := func(more string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(more), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		name  string
		start string // the log when followed, from its end
		steps []step
	}{
		{"append", "old\n", []step{{appendTo("a\n"), "a\n"}, {appendTo(""), ""}, {appendTo("b"), "b"}}},
		{"head cut after all was sent", "0123456789", []step{{rotate(8, "XY"), "XY"}, {appendTo("Z"), "Z"}}},
		{"head cut after more was written", "01234", []step{{appendTo("56789"), "56789"}, {func(t *testing.T, p string) { appendTo("ab")(t, p); rotate(8, "cd")(t, p) }, "abcd"}}},
		{"head cut before all was sent", "01234", []step{{func(t *testing.T, p string) { appendTo("56789ab")(t, p); rotate(8, "cd")(t, p) }, "56789abcd"}}},
		{"copied and truncated", "0123456789", []step{{rotate(-1, "AB"), "AB"}}},
		{"truncated and grown back past the offset", "abcd", []step{{rotate(-1, "efghijkl"), "efghijkl"}}},
		{"truncated without a copy", "abcd", []step{{func(t *testing.T, p string) { os.WriteFile(p, []byte("xy"), 0o644) }, "xy"}}},
		{"renamed and replaced", "old\n", []step{{func(t *testing.T, p string) { appendTo("last\n")(t, p); replace("new\n")(t, p) }, "last\nnew\n"}, {appendTo("more"), "more"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "w-1.log")
			if err := os.WriteFile(path, []byte(tt.start), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			lf := Follow(path, f, int64(len(tt.start)))
			defer lf.Close()
			for i, st := range tt.steps {
				st.change(t, path)
				var out bytes.Buffer
				flushes := 0
				if err := lf.Poll(&out, func() { flushes++ }); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if out.String() != st.want {
					t.Errorf("step %d sent %q; want %q", i, out.String(), st.want)
				}
				if (flushes > 0) != (st.want != "") {
					t.Errorf("step %d: %d flushes for %q", i, flushes, out.String())
				}
			}
		})
	}
}
