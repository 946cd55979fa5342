package logindex

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
)

func TestRecorder(t *testing.T) {
	log := filepath.Join(t.TempDir(), "w-1.log")
	t0 := time.Unix(1000, 0)
	r := Open(log)
	r.Sample(t0) // no log yet: no mark
	os.WriteFile(log, []byte("aaaa\n"), 0o600)
	r.Sample(t0.Add(time.Second))
	r.Sample(t0.Add(2 * time.Second)) // unchanged: no mark
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("bbbb\n")
	f.Close()
	r.Sample(t0.Add(3 * time.Second))
	marks, err := Load(log)
	if err != nil || len(marks) != 2 || marks[0].Off != 5 || marks[1].Off != 10 || !marks[1].Time.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("marks %v, %v", marks, err)
	}
	if at, ok := TimeOf(marks, 10); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Errorf("TimeOf(10) = %v, %v", at, ok)
	}
	if _, ok := TimeOf(marks, 11); ok {
		t.Errorf("TimeOf past the last mark is ok")
	}
	if got := StartFor(marks, t0.Add(2*time.Second)); got != 5 {
		t.Errorf("StartFor = %d, want 5", got)
	}
	if got := StartFor(marks, t0); got != 0 {
		t.Errorf("StartFor before all = %d, want 0", got)
	}
	// A rotation cut 5 bytes from the head: the marks follow the bytes.
	if err := r.Rotated(5); err != nil {
		t.Fatal(err)
	}
	marks, _ = Load(log)
	if len(marks) != 1 || marks[0].Off != 5 {
		t.Errorf("after rotation: %v", marks)
	}
	// A recorder reopened (emberd restarted) goes on from the index.
	if r2 := Open(log); r2.last != 5 || r2.n != 1 {
		t.Errorf("reopened: last %d, n %d", r2.last, r2.n)
	}
}

// The index stays under its cap however long the worker logs.
func TestRecorderBounded(t *testing.T) {
	log := filepath.Join(t.TempDir(), "w-2.log")
	r := Open(log)
	f, _ := os.Create(log)
	defer f.Close()
	t0 := time.Unix(1000, 0)
	for i := range 3 * limits.LogIndexMarks {
		f.WriteString("x\n")
		if err := r.Sample(t0.Add(time.Duration(i) * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	marks, _ := Load(log)
	if len(marks) > limits.LogIndexMarks || len(marks) < limits.LogIndexMarks/2 {
		t.Errorf("%d marks, cap %d", len(marks), limits.LogIndexMarks)
	}
	if last := marks[len(marks)-1]; last.Off != int64(2*3*limits.LogIndexMarks) {
		t.Errorf("last mark %v", last)
	}
}

// BenchmarkSample: a mark after the log grew, against the os.Stat every
// log check already did (the same-run baseline).
func BenchmarkSample(b *testing.B) {
	log := filepath.Join(b.TempDir(), "w-3.log")
	f, _ := os.Create(log)
	defer f.Close()
	b.Run("stat", func(b *testing.B) {
		for b.Loop() {
			f.WriteString("x\n")
			os.Stat(log)
		}
	})
	b.Run("sample", func(b *testing.B) {
		r := Open(log)
		now := time.Now()
		for b.Loop() {
			f.WriteString("x\n")
			now = now.Add(time.Second)
			r.Sample(now)
		}
	})
}
