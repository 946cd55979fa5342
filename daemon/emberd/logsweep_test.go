package emberd

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSweepWorkerLogs: logs of gone workers older than the retention go,
// fresh ones and those of live workers stay.
func TestSweepWorkerLogs(t *testing.T) {
	const live = "w-111111111111"
	dir := t.TempDir()
	old := time.Now().Add(-48 * time.Hour)
	files := map[string]bool{ // name -> should survive
		"w-0123456789ab.log":   false,
		"w-0123456789ab.log.1": false,
		"w-aaaaaaaaaaaa.log":   true, // fresh
		live + ".log":          true, // live worker
		"notes.txt":            true, // not a worker log
	}
	for name, keep := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if !keep || name == live+".log" || name == "notes.txt" {
			os.Chtimes(p, old, old)
		}
	}
	l := &logSweeper{dir: dir, keep: 24 * time.Hour, live: func(id string) bool { return id == live }}
	if n := l.sweep(); n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	for name, keep := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if keep != (err == nil) {
			t.Errorf("%s: exists=%v, want %v", name, err == nil, keep)
		}
	}
}
