package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Disk-full behaviour on two real small file systems: tmpfs (where even a
// read of a sparse file's hole needs a free page) and ext4 on a loop device.
// Badger writes through sparse memory-mapped files; before the disk guard,
// filling the disk killed emberd with SIGBUS, and so did every restart.

const (
	diskMinFreeMB = 64
	diskReserveMB = 32
	diskFSSize    = 256 << 20
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// mountExt4 makes an ext4 file system of size bytes in a file and mounts
// it through a loop device. -m 0: no blocks reserved for root, so "full"
// means the same to emberd (root) and to df.
func mountExt4(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Skipf("cannot make an ext4 file system (mkfs.ext4): %v: %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount an ext4 loop image (needs root and loop devices): %v: %s", err, out)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func unmount(t *testing.T, dir string) {
	for i := 0; i < 50; i++ {
		if err := exec.Command("umount", dir).Run(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("umount %s failed", dir)
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// fill appends to path until the file system has at most leave bytes free
// (0: until ENOSPC), in 1 MiB writes.
func fill(t *testing.T, path string, leave uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) // not zero: no file system may skip it
	}
	dir := filepath.Dir(path)
	for range 4096 { // bounded: the file systems here are 256 MiB
		free := freeBytes(t, dir)
		if free <= leave {
			return
		}
		n := uint64(len(buf))
		if leave > 0 && free-leave < n {
			n = free - leave
		}
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// alive fails the test if emberd has died (a SIGBUS would show here).
func alive(t *testing.T, d *Daemon) {
	t.Helper()
	select {
	case <-d.exited:
		t.Fatalf("emberd died (%v):\n%s", d.cmd.ProcessState, d.Log())
	default:
	}
}

// want507 checks a refusal for a full disk: 507 with the free and needed
// bytes named in the JSON body.
func want507(t *testing.T, what string, code int, body []byte) {
	t.Helper()
	if code != 507 {
		t.Fatalf("%s: got %d %s, want 507", what, code, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: body is not JSON: %s", what, body)
	}
	free, fok := m["freeBytes"].(float64)
	need, nok := m["neededBytes"].(float64)
	msg, _ := m["error"].(string)
	if !fok || !nok || need <= free || !strings.Contains(msg, "insufficient storage") {
		t.Fatalf("%s: 507 body does not name free < needed bytes: %s", what, body)
	}
}

func TestDiskFullTmpfs(t *testing.T) { diskFull(t, mountTmpfs(t, diskFSSize)) }

func TestDiskFullExt4(t *testing.T) { diskFull(t, mountExt4(t, diskFSSize)) }

func diskFull(t *testing.T, mnt string) {
	data := filepath.Join(mnt, "data")
	filler := filepath.Join(mnt, "filler")
	d := StartDaemonWith(t, DaemonOptions{DataDir: data},
		"--min-free-disk-mb", fmt.Sprint(diskMinFreeMB), "--disk-reserve-mb", fmt.Sprint(diskReserveMB))
	ep := d.CreateEndpoint("disk", nil)
	done := d.Submit(ep, map[string]any{"input": map[string]any{"echo": "before"}})
	d.WaitStatus(ep, done, 30*time.Second, "COMPLETED")

	// A job that streams while the disk fills: its chunks and result
	// finish work already accepted, so they are still written.
	running := d.Submit(ep, map[string]any{"input": map[string]any{"stream": 10, "stream_delay_ms": 300}})
	long := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 60000}})
	d.WaitStatus(ep, running, 30*time.Second, "IN_PROGRESS", "COMPLETED")
	d.WaitStatus(ep, long, 30*time.Second, "IN_PROGRESS")

	// Between the two thresholds: new work is refused, reads are served.
	fill(t, filler, (diskMinFreeMB+diskReserveMB)/2<<20)
	alive(t, d)
	time.Sleep(300 * time.Millisecond) // the guard reuses a reading for 250 ms
	code, body := d.Do("POST", "/v2/"+ep+"/run", map[string]any{"input": map[string]any{"echo": 1}})
	want507(t, "/run below --min-free-disk-mb", code, body)
	code, body = d.Do("POST", "/v1/endpoints", map[string]any{"name": "more", "command": []string{workerBin}, "gpuCount": 0})
	if code != 507 || !strings.Contains(string(body), "neededBytes") || !strings.Contains(string(body), "freeBytes") {
		t.Fatalf("endpoint create below --min-free-disk-mb: got %d %s, want 507 naming freeBytes and neededBytes", code, body)
	}
	readsServed(t, d, ep, done)
	if st := d.JSON("POST", "/v2/"+ep+"/cancel/"+long, nil, 200); st["status"] != "CANCELLED" {
		t.Fatalf("cancel of a running job below --min-free-disk-mb: %v", st)
	}
	if st := d.WaitStatus(ep, running, 30*time.Second, "COMPLETED", "FAILED"); st["status"] != "COMPLETED" {
		t.Fatalf("a job running while the disk filled: %v\n%s", st, d.Log())
	}
	if got := d.JSON("GET", "/v2/"+ep+"/stream/"+running, nil, 200); len(fmt.Sprint(got["stream"])) < 10 {
		t.Fatalf("stream of the job that ran while the disk filled: %v", got)
	}

	// Full to the last block: still no crash, still reads, still 507.
	fill(t, filler, 0)
	for i := range 20 {
		code, body = d.Do("POST", "/v2/"+ep+"/run", map[string]any{"input": map[string]any{"echo": strings.Repeat("x", 64<<10), "i": i}})
		want507(t, "/run on a full disk", code, body)
	}
	code, body = d.Do("POST", "/v2/"+ep+"/cancel/"+done, nil)
	if code != 200 {
		t.Fatalf("cancel of a finished job on a full disk: %d %s", code, body)
	}
	readsServed(t, d, ep, done)
	alive(t, d)

	// A start on the full disk, after a clean stop and after a crash: it
	// serves reads, says why it refuses writes, and does not exit.
	d.Stop()
	d.Restart()
	alive(t, d)
	readsServed(t, d, ep, done)
	code, body = d.Do("POST", "/v2/"+ep+"/run", map[string]any{"input": map[string]any{"echo": 2}})
	want507(t, "/run after a start on a full disk", code, body)
	// After a crash with the reserve file used up too, the store cannot
	// be opened at all: emberd stays up, answers /healthz, and says why in
	// /readyz and in 507s until space returns.
	d.Kill9()
	fill(t, filler, 0)
	d.opts.StartProbe = "/healthz"
	d.Restart()
	time.Sleep(time.Second) // long enough for a fault or an exit to show
	alive(t, d)
	if code, body := d.Do("GET", "/healthz", nil); code != 200 {
		t.Fatalf("/healthz while waiting for space: %d %s", code, body)
	}
	code, body = d.Do("GET", "/readyz", nil)
	if code != 503 || !strings.Contains(string(body), "neededBytes") {
		t.Fatalf("/readyz while waiting for space: %d %s", code, body)
	}
	code, body = d.Do("GET", "/v2/"+ep+"/status/"+done, nil)
	want507(t, "status while the store waits for space", code, body)

	// Space returns: writes resume with no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body = d.Do("POST", "/v2/"+ep+"/run", map[string]any{"input": map[string]any{"echo": "after"}})
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/run still %d %s 30 s after space was freed", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	d.WaitStatus(ep, m["id"].(string), 30*time.Second, "COMPLETED")
	if code, body := d.Do("GET", "/readyz", nil); code != 200 {
		t.Fatalf("/readyz after space returned: %d %s", code, body)
	}
	alive(t, d)
}

// readsServed checks what must keep working on a full disk: liveness, the
// status of an existing job, the endpoint list, and a /readyz that says
// why it is not ready.
func readsServed(t *testing.T, d *Daemon, ep, job string) {
	t.Helper()
	if code, body := d.Do("GET", "/healthz", nil); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	st := d.JSON("GET", "/v2/"+ep+"/status/"+job, nil, 200)
	if st["status"] != "COMPLETED" && st["status"] != "CANCELLED" {
		t.Fatalf("status of the finished job: %v", st)
	}
	code, body := d.Do("GET", "/v1/endpoints", nil)
	if code != 200 || !strings.Contains(string(body), ep) {
		t.Fatalf("endpoint list: %d %s", code, body)
	}
	resp, err := httpGet(d.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if resp.code != 503 || !strings.Contains(resp.body, "freeBytes") || !strings.Contains(resp.body, "neededBytes") {
		t.Fatalf("/readyz on a full disk: %d %s, want 503 naming freeBytes and neededBytes", resp.code, resp.body)
	}
}

type answer struct {
	code int
	body string
}

func httpGet(url string) (answer, error) {
	resp, err := http.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}, err
}
