// Package faults is fault injection for emberd's opt-in debug listener
// (--debug-listen, README.md): hooks that tests of the daemon's liveness
// checks (the systemd watchdog) drive from outside the process, and that
// no package exports as part of its API. The package owning a hook sets it
// when it is initialised; emberd's debug handlers call it.
//
// Being internal, it is reachable only from within this module. It imports
// nothing of Ember, so that any package may set a hook in it.
package faults

import "time"

// WedgeScheduler holds the lock of sched, a *scheduler.Scheduler, for d,
// as a wedged scheduler loop would, and returns once it has let go. Every
// scheduler call blocks meanwhile. Package scheduler sets it.
var WedgeScheduler func(sched any, d time.Duration)
