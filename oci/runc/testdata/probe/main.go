// Command probe is the whole image of the runc runtime's tests: a static
// binary that does one thing per run and prints what it saw.
//
//	probe exit N            print to stdout and stderr, exit N
//	probe true              exit 0 at once (benchmarks)
//	probe alloc MIB         allocate and touch MIB MiB, 1 MiB at a time
//	probe forkbomb N        start N copies of "probe pause"; report the first failure
//	probe pause             sleep forever
//	probe syscalls          try unshare, clone(CLONE_NEWUSER), mount, keyctl; print errnos
//	probe pids              count the processes in /proc
//	probe write PATH TEXT   write PATH, then sleep forever
//	probe cat PATH...       print files
//	probe trap              exit 0 on SIGTERM
//	probe ignore            ignore SIGTERM, sleep
//	probe tick              print a line every 50 ms, forever
//	probe spam MIB          write MIB MiB of numbered lines to stdout
//	probe id                print ids, capabilities, cwd, hostname, env, network interfaces
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe CMD [ARGS]")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "exit":
		fmt.Println("hello from probe")
		fmt.Fprintln(os.Stderr, "hello on stderr")
		os.Exit(atoi(args[0]))
	case "true":
	case "alloc":
		alloc(atoi(args[0]))
	case "forkbomb":
		forkbomb(atoi(args[0]))
	case "pause":
		sleepForever()
	case "syscalls":
		syscalls()
	case "pids":
		pids()
	case "write":
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fmt.Println("write:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", args[0])
		sleepForever()
	case "cat":
		for _, p := range args {
			b, err := os.ReadFile(p)
			if err != nil {
				fmt.Println("cat:", err)
				os.Exit(1)
			}
			fmt.Printf("%s=%s\n", p, b)
		}
	case "trap":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		fmt.Println("got SIGTERM")
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		sleepForever()
	case "tick":
		for i := 0; ; i++ {
			fmt.Println("tick", i)
			time.Sleep(50 * time.Millisecond)
		}
	case "spam":
		spam(atoi(args[0]))
	case "id":
		id()
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return n
}

var sink [][]byte

func alloc(mib int) {
	for i := 1; i <= mib; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		sink = append(sink, b)
		if i%16 == 0 {
			fmt.Println("allocated MiB", i)
		}
	}
	fmt.Println("allocated all", mib)
}

func forkbomb(n int) {
	attr := &syscall.ProcAttr{Env: []string{"GOMAXPROCS=1"}}
	for i := 0; i < n; i++ {
		if _, err := syscall.ForkExec("/proc/self/exe", []string{"probe", "pause"}, attr); err != nil {
			fmt.Printf("fork failed after %d: %v\n", i, err)
			return
		}
	}
	fmt.Printf("spawned all %d\n", n)
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func syscalls() {
	fmt.Println("unshare-user=" + errName(unix.Unshare(unix.CLONE_NEWUSER)))
	fmt.Println("unshare-ns=" + errName(unix.Unshare(unix.CLONE_NEWNS)))
	_, err := syscall.ForkExec("/proc/self/exe", []string{"probe", "true"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER},
	})
	fmt.Println("clone-user=" + errName(err))
	os.MkdirAll("/mnt", 0o755)
	fmt.Println("mount=" + errName(unix.Mount("tmpfs", "/mnt", "tmpfs", 0, "")))
	_, err = unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
	fmt.Println("keyctl=" + errName(err))
	status()
}

func status() {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"Seccomp:", "NoNewPrivs:", "CapEff:", "CapBnd:", "Uid:", "Gid:", "Groups:"} {
			if strings.HasPrefix(line, k) {
				fmt.Println(strings.Join(strings.Fields(line), " "))
			}
		}
	}
}

func pids() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Println("pids:", err)
		os.Exit(1)
	}
	var list []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			list = append(list, e.Name())
		}
	}
	fmt.Printf("pids=%d [%s] self=%d\n", len(list), strings.Join(list, " "), os.Getpid())
}

func spam(mib int) {
	line := strings.Repeat("x", 100)
	total := 0
	for i := 0; total < mib<<20; i++ {
		n, _ := fmt.Printf("%08d %s\n", i, line)
		total += n
		if i%2000 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	fmt.Println("spam done")
}

func id() {
	status()
	wd, _ := os.Getwd()
	host, _ := os.Hostname()
	fmt.Println("cwd=" + wd)
	fmt.Println("hostname=" + host)
	for _, kv := range os.Environ() {
		fmt.Println("env " + kv)
	}
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	fmt.Println("interfaces=" + strings.Join(names, ","))
}

// sleepForever blocks without tripping the runtime's deadlock detector
// (which a bare select {} in a lone goroutine does).
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
