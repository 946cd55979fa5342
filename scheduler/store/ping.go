package store

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// pingKey is a key that is never written: reading it walks the memtables
// and the LSM levels' indexes without touching any record.
var pingKey = []byte("p/ping")

// Ping proves the store can serve a read: it is open, its committer is
// running, and Badger answers a read-only transaction. It is cheap (no
// disk write, no fsync) and safe to call often, e.g. from a watchdog.
func (s *Badger) Ping(context.Context) error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	select {
	case <-s.stopped:
		return errors.New("store: committer has stopped")
	default:
	}
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(pingKey)
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("store read: %w", err)
	}
	return nil
}
