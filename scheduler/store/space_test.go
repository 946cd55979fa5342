package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// A write the file system has no room for is refused with a NoSpaceError
// naming the bytes, and the store serves reads and takes writes again
// once there is room (here: once the reserve is lowered).
func TestCommitRefusedWithoutSpace(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := s.NewBatch()
	b.PutEndpoint(&Endpoint{ID: "e1"})
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	free, err := FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.opts.Reserve = free + 1<<30 // more than the disk has
	b = s.NewBatch()
	b.PutEndpoint(&Endpoint{ID: "e2"})
	err = s.Commit(context.Background(), b)
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, ErrNoSpace) || ns.Needed <= ns.Free {
		t.Fatalf("got %v, want a NoSpaceError with needed > free", err)
	}
	if eps, err := s.Endpoints(); err != nil || len(eps) != 1 {
		t.Fatalf("reads on a full disk: %v %v", eps, err)
	}
	s.opts.Reserve = DefaultReserve
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatalf("write once there is room: %v", err)
	}
}

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
			var stores [2]*Store
			for i := range stores {
				s, err := Open(Options{Dir: b.TempDir(), unguarded: i == 0, Logger: slog.New(slog.DiscardHandler)})
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
