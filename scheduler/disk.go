package scheduler

import (
	"errors"
	"fmt"

	"github.com/emberhq/ember/scheduler/diskguard"
)

// DiskGuard is the guard of the data disk that the scheduler consults
// before its own writes, for the writes made outside it (API keys, image
// imports: Check with diskguard.NewWork) and for /readyz (Ready). It is
// nil for an in-memory store; a nil guard lets every write through.
func (s *Scheduler) DiskGuard() *diskguard.Guard { return s.disk }

// persistErr wraps a failed store write: a full disk stays an
// *InsufficientStorageError (507, with the free and needed bytes), any
// other failure is ErrUnavailable.
func persistErr(what string, err error) error {
	if errors.Is(err, ErrInsufficientStorage) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}
