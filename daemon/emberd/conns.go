package emberd

import (
	"fmt"
	"log/slog"
	"syscall"
)

// raiseFileLimit raises the soft limit on open files to the hard limit:
// every client connection, worker log, pipe and store file is a
// descriptor, and the usual soft limit (1024) is far below what emberd
// serves. Go's runtime already raises it to one below the hard limit at
// start and gives child processes the original back; raising it the rest
// of the way turns that restoring off, which changes nothing for
// container workers (their limit is set in their spec: the hard limit,
// oci/bundle) and gives process-runtime workers the same. It returns the
// limits in force afterwards.
func raiseFileLimit(log *slog.Logger) (soft, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("read the open-files limit: %w", err)
	}
	before := rl.Cur
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			log.Warn("could not raise the open-files soft limit to the hard limit", "soft", before, "hard", rl.Max, "err", err)
			return before, rl.Max, nil
		}
	}
	log.Info("open-files limit", "soft", rl.Cur, "hard", rl.Max, "soft_before", before)
	return rl.Cur, rl.Max, nil
}

// Client connections (--max-connections, daemon/connlimit).
const (
	// maxDefaultConnections caps the default: an idle connection costs
	// emberd about 20 KiB (its goroutine and buffers; 8192 idle ones took
	// RSS from 29 to 190 MB in go run ./tests/bench -only conns), so the
	// cap keeps them near 200 MB.
	maxDefaultConnections = 8192
	// minReserve and maxReserve bound the reserve, an eighth of
	// --max-connections: each worker holds one or two connections (its
	// job-take long-poll, its pings).
	minReserve = 16
	maxReserve = 1024
)

// connectionLimits returns the cap on client connections and the reserve
// past it for the worker API and the probes. A flag of 0 sizes the cap from the
// open-files soft limit: half of it, leaving the rest to the reserve, the
// job store, the workers' logs and pipes, and image imports; at most
// maxDefaultConnections.
func connectionLimits(flag int, softFiles uint64) (limit, reserve int) {
	limit = flag
	if limit <= 0 {
		limit = int(min(softFiles/2, maxDefaultConnections))
		if limit < 1 {
			limit = 1
		}
	}
	return limit, min(max(limit/8, minReserve), maxReserve)
}
