package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// diskPart prints how soon emberd takes work again once a full data disk
// has room: a tmpfs of 256 MiB is filled to ENOSPC with a file, the file is
// deleted, and the time from the unlink to the first 200 on /run is taken
// (median of rounds). A second figure does the same after a start on the
// full disk (the store opened from its reserve file). Needs root (mount).
func diskPart(tmp string, rounds int) error {
	if os.Geteuid() != 0 {
		fmt.Println("disk: skipped (mounting a tmpfs needs root)")
		return nil
	}
	mnt := filepath.Join(tmp, "disk")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount tmpfs: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	d, err := startEmberd(filepath.Join(mnt, "data"), "process")
	if err != nil {
		return err
	}
	defer func() { d.stop() }()
	ep, err := d.createEndpoint(map[string]any{"name": "disk", "command": []string{*workerBin}, "gpuCount": 0})
	if err != nil {
		return err
	}
	filler := filepath.Join(mnt, "filler")
	var running, restarted []time.Duration
	for r := 0; r < rounds; r++ {
		if err := fillDisk(filler); err != nil {
			return err
		}
		if code, err := d.runStatus(ep); err != nil || code != http.StatusInsufficientStorage {
			return fmt.Errorf("/run on a full disk: %d %v", code, err)
		}
		took, err := d.freeAndWait(filler, ep)
		if err != nil {
			return err
		}
		running = append(running, took)
	}
	for r := 0; r < rounds; r++ {
		if err := fillDisk(filler); err != nil {
			return err
		}
		d.stop()
		if d, err = startEmberd(filepath.Join(mnt, "data"), "process"); err != nil {
			return err
		}
		if err := fillDisk(filler); err != nil { // what the reserve file gave back
			return err
		}
		took, err := d.freeAndWait(filler, ep)
		if err != nil {
			return err
		}
		restarted = append(restarted, took)
	}
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("disk full: space freed to first /run 200 (median of %d)", rounds), ms3(median(running)))
	fmt.Printf("%-52s %12s\n", "  same, after a start on the full disk", ms3(median(restarted)))
	return nil
}

// fillDisk appends 1 MiB writes to path until the file system is full.
func fillDisk(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 1<<20)
	for range 1024 {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
	return errors.New("fill: the file system did not fill up in 1 GiB")
}

func (d *daemon) runStatus(ep string) (int, error) {
	req, err := http.NewRequest("POST", d.url+"/v2/"+ep+"/run", bytes.NewReader([]byte(`{"input":{"output":1}}`)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// freeAndWait deletes the filler and polls /run every 5 ms until it
// answers 200, returning the time since the unlink.
func (d *daemon) freeAndWait(filler, ep string) (time.Duration, error) {
	start := time.Now()
	if err := os.Remove(filler); err != nil {
		return 0, err
	}
	for time.Since(start) < 30*time.Second {
		code, err := d.runStatus(ep)
		if err == nil && code == http.StatusOK {
			return time.Since(start), nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing listens: emberd is gone (a zombie still answers
			// kill 0, so its log says it).
			return 0, fmt.Errorf("emberd died while the disk was full: %s", d.fatalLine(filepath.Dir(filler)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, errors.New("/run did not answer 200 within 30 s of freeing the disk")
}

// fatalLine returns the lines of emberd's log (DIR/data.log) that say why
// it died: the Go runtime's fatal error and the first frame outside it.
func (d *daemon) fatalLine(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "data.log"))
	if err != nil {
		return "its log is unreadable: " + err.Error()
	}
	var out []string
	lines := strings.Split(string(b), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "[signal") {
			out = append(out, l)
		}
		if strings.HasPrefix(l, "github.com/dgraph-io/") && len(out) > 0 && len(out) < 4 {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "no fatal error in its log"
	}
	return strings.Join(out, " | ")
}
