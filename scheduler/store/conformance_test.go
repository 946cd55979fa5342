package store_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/emberhq/ember/scheduler/store"
	"github.com/emberhq/ember/scheduler/store/storetest"
)

// TestBadgerConformance runs the store contract's suite against the
// Badger engine: on disk, on disk with small group commits (one and three
// writes at most, which split queued commits across many transactions and
// leave many queued at Close), and in memory.
func TestBadgerConformance(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	starve := func(t *testing.T, s store.Store) func() {
		b := s.(*store.Badger)
		free, err := store.FreeBytes(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		store.SetReserve(b, free+1<<30) // more than the disk has
		return func() { store.SetReserve(b, store.DefaultReserve) }
	}
	for _, tc := range []struct {
		name string
		opts store.BadgerOptions
	}{
		{"disk", store.BadgerOptions{}},
		{"groups of one", store.BadgerOptions{MaxBatchOps: 1}},
		{"groups of three", store.BadgerOptions{MaxBatchOps: 3}},
		{"memory", store.BadgerOptions{InMemory: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := storetest.Engine{
				Open: func(t *testing.T, dir string) store.Store {
					o := tc.opts
					o.Dir, o.Logger = dir, quiet
					s, err := store.OpenBadger(o)
					if err != nil {
						t.Fatalf("OpenBadger: %v", err)
					}
					return s
				},
				Volatile: tc.opts.InMemory,
			}
			if !tc.opts.InMemory {
				e.Starve = starve // the in-memory store does not count space
			}
			storetest.Run(t, e)
		})
	}
}
