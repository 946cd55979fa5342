package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// timeToReady starts emberd on dataDir under a fake systemd notify socket
// and returns the time from exec to READY=1 (sent once the job store is
// recovered and every listener is up), median of n starts.
func timeToReady(dataDir string, n int) (time.Duration, error) {
	sockDir, err := os.MkdirTemp("", "ember-notify-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var took []time.Duration
	for i := 0; i < n; i++ {
		cmd := exec.Command(*emberdBin, "--data-dir", dataDir, "--listen", freeAddr(), "--grpc-listen", freeAddr(), "--runtime", "process", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		logf, err := os.Create(dataDir + "-ready.log")
		if err != nil {
			return 0, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		d := &daemon{cmd: cmd}
		buf := make([]byte, 4096)
		ready := false
		for !ready {
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				d.stop()
				return 0, fmt.Errorf("no READY=1 from emberd within 60 s: %v (see %s-ready.log)", err, dataDir)
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if line == "READY=1" {
					took = append(took, time.Since(start))
					ready = true
				}
			}
		}
		d.stop()
		logf.Close()
	}
	return median(took), nil
}
