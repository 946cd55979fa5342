package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkCommitJob measures durable commits of 500-byte job records
// with the disk-space rules (guarded: the free-space gate, the write-ahead
// log's allocation) and without (unguarded), on two stores in the same
// directory's file system. The two alternate every 200 commits, so that
// load from elsewhere on the machine falls on both alike; each reports its
// own commits/s. writers=16 is 16 concurrent committers sharing fsyncs.
func BenchmarkCommitJob(b *testing.B) {
	b.Run("statfs", func(b *testing.B) {
		dir := b.TempDir()
		for range b.N {
			FreeBytes(dir)
		}
	})
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var stores [2]*Badger
			for i := range stores {
				s, err := OpenBadger(BadgerOptions{Dir: b.TempDir(), unguarded: i == 0, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				stores[i] = s
			}
			input := []byte(`"` + strings.Repeat("x", 480) + `"`) // a 500-byte record with its fields
			var spent [2]time.Duration
			var done [2]int
			const round = 200
			b.ResetTimer()
			for n, r := 0, 0; n < b.N; r++ {
				k := min(round, b.N-n)
				which := r % 2
				s := stores[which]
				start := time.Now()
				var wg sync.WaitGroup
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < k; i += writers {
							bt := s.NewBatch()
							j := &Job{ID: fmt.Sprintf("j-%d-%d", r, i), EndpointID: "e", Input: input}
							if err := bt.PutJob(j, time.Time{}); err != nil {
								b.Error(err)
								return
							}
							if err := s.Commit(context.Background(), bt); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				spent[which] += time.Since(start)
				done[which] += k
				n += k
			}
			for i, name := range []string{"unguarded", "guarded"} {
				if done[i] > 0 {
					b.ReportMetric(float64(done[i])/spent[i].Seconds(), name+"-commits/s")
				}
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestFillWhileWriting fills a small tmpfs from another writer while four
// committers write small records and 100 KiB values (which go to the
// memory-mapped value log): a write into a mapping the file system cannot
// back would kill the test binary with SIGBUS. Writes must fail with a
// NoSpaceError while the disk is full and succeed once it is not.
func TestFillWhileWriting(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	s, err := OpenBadger(BadgerOptions{Dir: filepath.Join(mnt, "data"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	small := []byte(`"` + strings.Repeat("x", 480) + `"`)
	big := []byte(`"` + strings.Repeat("y", 100<<10) + `"`)
	commit := func(w, i int) error {
		b := s.NewBatch()
		if w%2 == 0 {
			b.PutJob(&Job{ID: fmt.Sprintf("j%d-%d", w, i), Input: small}, time.Time{})
		} else {
			b.PutChunk(Chunk{JobID: fmt.Sprintf("c%d", w), Index: uint64(i), Output: big}, time.Time{})
		}
		return s.Commit(context.Background(), b)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refused [4]int
	var other [4]error
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := commit(w, i); errors.Is(err, ErrNoSpace) {
					refused[w]++
				} else if err != nil {
					other[w] = err
					return
				}
			}
		}()
	}
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{1}, 256<<10)
	for range 1024 { // 256 MiB at most: the tmpfs is 96 MiB
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	time.Sleep(time.Second) // the committers keep trying on the full disk
	f.Close()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for w := range 4 {
		if other[w] != nil {
			t.Fatalf("writer %d: %v", w, other[w])
		}
	}
	if refused == [4]int{} {
		t.Fatal("no write was refused on a full disk")
	}
	for w := range 4 {
		if err := commit(w, -1); err != nil {
			t.Fatalf("write once space was freed: %v", err)
		}
	}
}
