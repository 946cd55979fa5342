package storetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// The crash test runs a writer in a child process (this test binary again,
// told by crashDirEnv to write instead of test), kills it with SIGKILL in
// the middle of its writes, opens its directory again and checks the
// promises: every acknowledged write is there, what is there is a prefix of
// each record's writes, batches are whole, and the recovery scans agree
// with the reads.

// crashDirEnv names the child's data directory.
const crashDirEnv = "EMBER_STORETEST_CRASH_DIR"

const (
	crashWriters = 4
	// crashAcks is how many acknowledged writes the parent waits for
	// before the kill; the writers go on meanwhile.
	crashAcks = 600
)

// A writer's line on the pipe: "try OP ID" before a write is queued,
// "ack OP ID" once it is acknowledged, "flush OP ID" once a Flush has
// acknowledged it. OP is put (the job queued, with its
// chunk 0 and, for even numbers, its webhook delivery), upd (completed,
// with chunk 1) or del (job, chunks and delivery deleted).
func crashLine(w *os.File, mu *sync.Mutex, what, op, id string) error {
	mu.Lock()
	defer mu.Unlock()
	_, err := fmt.Fprintf(w, "%s %s %s\n", what, op, id)
	return err
}

func crashJob(id string, n int, st store.Status) *store.Job {
	return &store.Job{ID: id, EndpointID: "ep", Status: st, Seq: uint64(n), Input: json.RawMessage(fmt.Sprintf(`{"n":%q}`, id))}
}

// crashWrite is the child: crashWriters goroutines write jobs as fast as
// they can, each job's operations in order, through every kind of commit,
// until the process is killed (or a minute passes).
func crashWrite(t *testing.T, e Engine, dir string) {
	s := e.Open(t, dir)
	acks := os.NewFile(3, "acks")
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, crashWriters)
	for g := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- crashWriter(ctx, s, g, acks, &mu)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}
}

func crashWriter(ctx context.Context, s store.Store, g int, acks *os.File, mu *sync.Mutex) error {
	// async holds the writes queued by CommitAsync and not acknowledged
	// yet: the next Flush, or the next durable commit of this goroutine
	// (the prefix promise), acknowledges them.
	var async []string
	ackAsync := func(what string) error {
		for _, a := range async {
			op, id, _ := strings.Cut(a, " ")
			if err := crashLine(acks, mu, what, op, id); err != nil {
				return err
			}
		}
		async = async[:0]
		return nil
	}
	for n := 0; ctx.Err() == nil; n++ {
		id := fmt.Sprintf("w%d-%06d", g, n)
		// Eight jobs in turn: two committed durably (the second then
		// completed), two through CommitLater (then deleted, the first
		// after completing), four asynchronously, then a Flush.
		mode := n % 8
		ops := map[int][]string{1: {"put", "upd"}, 2: {"put", "upd", "del"}, 3: {"put", "del"}}[mode]
		if ops == nil {
			ops = []string{"put"}
		}
		for _, op := range ops {
			b := s.NewBatch()
			var err error
			switch op {
			case "put":
				err = b.PutJob(crashJob(id, n, store.InQueue), time.Time{})
				b.PutChunk(store.Chunk{JobID: id, Index: 0, Output: json.RawMessage(`"c0"`)}, time.Time{})
				if err == nil && n%2 == 0 {
					err = b.PutDelivery(&store.Delivery{JobID: id, URL: "http://h/" + id})
				}
			case "upd":
				err = b.PutJob(crashJob(id, n, store.Completed), time.Time{})
				b.PutChunk(store.Chunk{JobID: id, Index: 1, Output: json.RawMessage(`"c1"`)}, time.Time{})
			case "del":
				b.DeleteJob(id)
				b.DeleteChunk(id, 0)
				b.DeleteChunk(id, 1)
				b.DeleteDelivery(id)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", op, id, err)
			}
			if err := crashLine(acks, mu, "try", op, id); err != nil {
				return err
			}
			switch {
			case mode >= 4:
				s.CommitAsync(b)
				async = append(async, op+" "+id)
				if mode == 7 {
					if err := s.Flush(ctx); err != nil {
						return fmt.Errorf("Flush: %w", err)
					}
					if err := ackAsync("flush"); err != nil {
						return err
					}
				}
				continue
			case mode == 2 || mode == 3:
				if err := <-s.CommitLater(b); err != nil {
					return fmt.Errorf("CommitLater %s %s: %w", op, id, err)
				}
			default:
				if err := s.Commit(ctx, b); err != nil {
					return fmt.Errorf("Commit %s %s: %w", op, id, err)
				}
			}
			if err := ackAsync("ack"); err != nil {
				return err
			}
			if err := crashLine(acks, mu, "ack", op, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// runPattern is the -test.run pattern that selects exactly the test name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// crashOps is what the child did to one job: the operations it queued, in
// order, and how many of them were acknowledged (a prefix: a job's
// operations are queued one after the other).
type crashOps struct {
	tried []string
	acked int
}

// testCrash: after a kill -9 in the middle of writes, every acknowledged
// write is there, each job's state is one its writes passed through with
// every acknowledged one in it, each batch is whole, and the recovery
// scans list exactly what the reads find. The kill comes right after an
// acknowledgement, past crashAcks of them: once after a Flush (of writes
// queued by CommitAsync, the most easily lost), once after a Commit.
func testCrash(t *testing.T, e Engine) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashWrite(t, e, dir)
		return
	}
	durable(t, e)
	t.Run("after a Flush", func(t *testing.T) { crashOnce(t, e, "flush") })
	t.Run("after a Commit", func(t *testing.T) { crashOnce(t, e, "ack") })
}

// crashOnce runs the writer, kills it after the first acknowledgement of
// kind trigger past crashAcks, and checks what its directory holds.
func crashOnce(t *testing.T, e Engine, trigger string) {
	dir := t.TempDir()
	jobs := runCrashChild(t, dir, trigger)
	s := open(t, e, dir)
	got := listCrashed(t, s)
	for id, o := range jobs {
		checkCrashedJob(t, s, got, id, o)
	}
	for id := range got.jobs {
		if jobs[id] == nil {
			t.Errorf("ScanJobs listed %s, which the writer never queued", id)
		}
	}
	for id := range got.spans {
		if jobs[id] == nil {
			t.Errorf("ScanChunkSpans listed %s, which the writer never queued", id)
		}
	}
	// The recovered store takes writes.
	putJob(t, s, crashJob("after", 0, store.InQueue), time.Time{})
	if _, err := s.Job(bg, "after", false); err != nil {
		t.Errorf("a write after recovery: %v", err)
	}
}

// runCrashChild runs the writer on dir and kills it; it returns what the
// writer queued and acknowledged, by job.
func runCrashChild(t *testing.T, dir, trigger string) map[string]*crashOps {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out strings.Builder
	cmd := exec.Command(os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// On a failure below the writer must not outlive the test.
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	kill := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer kill.Stop()

	jobs := map[string]*crashOps{}
	acked := 0
	killed := false
	sc := bufio.NewScanner(r)
	// Read to the end: acknowledgements written before the kill count.
	for sc.Scan() {
		what, rest, _ := strings.Cut(sc.Text(), " ")
		op, id, _ := strings.Cut(rest, " ")
		if err := crashRecord(jobs, what, op, id); err != nil {
			t.Fatal(err)
		}
		if what != "try" {
			acked++
		}
		if acked >= crashAcks && what == trigger && !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("the writer stopped after %d acknowledged writes (%v):\n%s", acked, werr, out.String())
	}
	t.Logf("killed the writer after %d acknowledged writes of %d jobs", acked, len(jobs))
	return jobs
}

// crashRecord adds one line of the writer's to jobs.
func crashRecord(jobs map[string]*crashOps, what, op, id string) error {
	o := jobs[id]
	if o == nil {
		o = &crashOps{}
		jobs[id] = o
	}
	switch what {
	case "try":
		o.tried = append(o.tried, op)
	case "ack", "flush":
		if o.acked >= len(o.tried) || o.tried[o.acked] != op {
			return fmt.Errorf("acknowledgement %q of %s out of order (queued %v, %d acknowledged)", op, id, o.tried, o.acked)
		}
		o.acked++
	default:
		return fmt.Errorf("the writer wrote %q", what+" "+op+" "+id)
	}
	return nil
}

// crashListing is what the recovery scans find after the crash.
type crashListing struct {
	jobs       map[string]bool
	spans      map[string]store.ChunkSpan
	deliveries map[string]bool
}

func listCrashed(t *testing.T, s store.Store) crashListing {
	l := crashListing{jobs: map[string]bool{}, spans: map[string]store.ChunkSpan{}, deliveries: map[string]bool{}}
	if err := s.ScanJobs(bg, func(j *store.Job) error {
		if l.jobs[j.ID] {
			t.Errorf("ScanJobs: %s twice", j.ID)
		}
		l.jobs[j.ID] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ScanChunkSpans(bg, func(id string, sp store.ChunkSpan) { l.spans[id] = sp }); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Deliveries(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		l.deliveries[d.JobID] = true
	}
	return l
}

// crashStates is a job's state after each of its operations: put queues
// it (with chunk 0), upd completes it (with chunk 1), del deletes it.
var crashStates = map[string]struct {
	status store.Status // "": absent
	span   store.ChunkSpan
}{
	"":    {},
	"put": {store.InQueue, store.ChunkSpan{First: 0, Next: 1, Bytes: 4}},
	"upd": {store.Completed, store.ChunkSpan{First: 0, Next: 2, Bytes: 8}},
	"del": {},
}

// checkCrashedJob checks one job after the crash: its state is the one
// after some prefix of its operations that holds every acknowledged one,
// its batches are whole, and the scans agree with the read.
func checkCrashedJob(t *testing.T, s store.Store, got crashListing, id string, o *crashOps) {
	n, err := strconv.Atoi(id[strings.IndexByte(id, '-')+1:])
	if err != nil {
		t.Fatalf("the writer wrote job id %q", id)
	}
	var status store.Status
	j, err := s.Job(bg, id, true)
	switch {
	case err == nil:
		status = j.Status
		if string(j.Input) != fmt.Sprintf(`{"n":%q}`, id) {
			t.Errorf("%s: input %s", id, j.Input)
		}
	case !errors.Is(err, store.ErrNotFound):
		t.Fatalf("Job(%s): %v", id, err)
	}
	ok := false
	for k := o.acked; k <= len(o.tried); k++ {
		op := ""
		if k > 0 {
			op = o.tried[k-1]
		}
		ok = ok || crashStates[op].status == status
	}
	if !ok {
		t.Errorf("%s: %q after the crash; queued %v, the first %d acknowledged", id, status, o.tried, o.acked)
		return
	}
	want := crashStates["put"]
	if status == "" {
		want = crashStates[""]
	} else if status == store.Completed {
		want = crashStates["upd"]
	}
	if sp := got.spans[id]; sp != want.span {
		t.Errorf("%s: %q, with chunks %+v", id, status, sp)
	}
	if got.jobs[id] != (status != "") {
		t.Errorf("%s: %q, and ScanJobs listed it: %v", id, status, got.jobs[id])
	}
	if wantD := status != "" && n%2 == 0; got.deliveries[id] != wantD {
		t.Errorf("%s: %q, delivery %v", id, status, got.deliveries[id])
	}
}
