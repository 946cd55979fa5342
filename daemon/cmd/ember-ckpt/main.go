// Command ember-ckpt makes the CUDA driver's checkpoint calls for emberd,
// which starts it (cudackpt.Helper, oci/cudackpt/helper.go) and talks to it
// over its stdin and stdout; it is not a command for people.
//
// Usage:
//
//	ember-ckpt [--libcuda PATH]
//
// It loads libcuda at run time (by default libcuda.so.1 through the
// loader, then from the driver directories in oci/cudackpt/libcuda), on
// the first request, and answers the line protocol described in
// oci/cudackpt/protocol.go, each request in its own thread, until its stdin
// ends; then it waits for the calls under way and exits 0.
//
// The calls run here and not in emberd so that a driver fault kills this
// process, and a hung call can be ended by killing it, without taking the
// daemon down. For the same reason it ignores SIGINT, SIGTERM and SIGHUP:
// a checkpoint cut short can leave the process being checkpointed in a
// failed state, so it stops when emberd closes its stdin.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/libcuda"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("ember-ckpt", flag.ContinueOnError)
	lib := fs.String("libcuda", "", "the CUDA driver library to load (default: libcuda.so.1, found by the loader or in the usual driver directories)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "ember-ckpt: unexpected arguments %q\n", fs.Args())
		return 2
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	// The protocol gets a descriptor of its own, and fd 1 becomes stderr:
	// whatever the driver library prints cannot corrupt the answers.
	fd, err := unix.FcntlInt(uintptr(unix.Stdout), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ember-ckpt: dup stdout: %v\n", err)
		return 1
	}
	if err := unix.Dup2(unix.Stderr, unix.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "ember-ckpt: stdout to stderr: %v\n", err)
		return 1
	}
	out := os.NewFile(uintptr(fd), "protocol")

	if err := cudackpt.Serve(os.Stdin, out, libcuda.New(*lib, nil)); err != nil {
		fmt.Fprintf(os.Stderr, "ember-ckpt: %v\n", err)
		return 1
	}
	return 0
}
