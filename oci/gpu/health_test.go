package gpu

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

func TestFreeMemory(t *testing.T) {
	s := dgxh100.New()
	s.InitFunc = func() nvml.Return {
		t.Error("FreeMemory called Init: the caller holds NVML initialised")
		return nvml.SUCCESS
	}
	s.ShutdownFunc = func() nvml.Return {
		t.Error("FreeMemory called Shutdown")
		return nvml.SUCCESS
	}
	for i := range s.Devices {
		free := uint64(i+1) << 30
		mockDevice(s, i).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Free: free, Used: 80<<30 - free}, nvml.SUCCESS
		}
	}
	for i := range s.Devices {
		got, err := FreeMemory(s, mockDevice(s, i).UUID)
		if err != nil || got != uint64(i+1)<<30 {
			t.Errorf("GPU %d: FreeMemory = %d, %v; want %d", i, got, err, uint64(i+1)<<30)
		}
	}

	lost := mockDevice(s, 2)
	lost.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	if _, err := FreeMemory(s, lost.UUID); !errors.Is(err, nvml.ERROR_GPU_IS_LOST) || !strings.Contains(err.Error(), lost.UUID) {
		t.Errorf("lost GPU: err = %v", err)
	}
	if _, err := FreeMemory(s, "GPU-not-there"); err == nil || !strings.Contains(err.Error(), "GPU-not-there") {
		t.Errorf("unknown GPU: err = %v", err)
	}
	if _, err := FreeMemory(nil, "GPU-x"); err == nil {
		t.Error("nil interface: no error")
	}
}

// healthFixture is a DGX H100 mock whose GPUs support events, and an event
// set fed from a channel.
type healthFixture struct {
	s      *server.Server
	events chan nvml.EventData
	// waitErr, when set, is what the next Wait returns.
	waitErr chan nvml.Return

	mu         sync.Mutex
	registered map[string]uint64 // UUID -> event mask
	freed      bool
	inits      int
	shutdowns  int
	waits      int
}

func newHealthFixture(t *testing.T) *healthFixture {
	t.Helper()
	f := &healthFixture{
		s:          dgxh100.New(),
		events:     make(chan nvml.EventData, 16),
		waitErr:    make(chan nvml.Return, 1),
		registered: map[string]uint64{},
	}
	f.s.InitFunc = func() nvml.Return { f.mu.Lock(); f.inits++; f.mu.Unlock(); return nvml.SUCCESS }
	f.s.ShutdownFunc = func() nvml.Return { f.mu.Lock(); f.shutdowns++; f.mu.Unlock(); return nvml.SUCCESS }
	set := &mock.EventSet{
		WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
			f.mu.Lock()
			f.waits++
			f.mu.Unlock()
			select {
			case ret := <-f.waitErr:
				return nvml.EventData{}, ret
			case e := <-f.events:
				return e, nvml.SUCCESS
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { f.mu.Lock(); f.freed = true; f.mu.Unlock(); return nvml.SUCCESS },
	}
	f.s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return set, nvml.SUCCESS }
	for i := range f.s.Devices {
		d := mockDevice(f.s, i)
		d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeXidCriticalError |
				nvml.EventTypePState | nvml.EventTypeClock, nvml.SUCCESS
		}
		d.RegisterEventsFunc = func(mask uint64, s nvml.EventSet) nvml.Return {
			if s != set {
				t.Errorf("GPU %d registered with another event set", i)
			}
			f.mu.Lock()
			f.registered[d.UUID] = mask
			f.mu.Unlock()
			return nvml.SUCCESS
		}
	}
	return f
}

func (f *healthFixture) uuids() []string {
	var out []string
	for i := range f.s.Devices {
		out = append(out, mockDevice(f.s, i).UUID)
	}
	return out
}

func (f *healthFixture) xid(i int, xid uint64) nvml.EventData {
	return nvml.EventData{Device: f.s.Devices[i], EventType: nvml.EventTypeXidCriticalError, EventData: xid}
}

type healthReport struct{ uuid, reason string }

// watch runs WatchHealth in a goroutine; reports come on the channel, and
// the returned function cancels it and waits for its end (failing the test
// if it does not end promptly), returning its error.
func (f *healthFixture) watch(t *testing.T, uuids []string) (<-chan healthReport, func() error) {
	t.Helper()
	reports := make(chan healthReport, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- WatchHealth(ctx, f.s, uuids, func(uuid, reason string) { reports <- healthReport{uuid, reason} })
	}()
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(healthWait + 2*time.Second):
			t.Fatal("WatchHealth did not return after its context ended")
			return nil
		}
	}
	t.Cleanup(func() { cancel() })
	return reports, stop
}

func nextReport(t *testing.T, reports <-chan healthReport) healthReport {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no report")
		return healthReport{}
	}
}

func TestWatchHealthXID(t *testing.T) {
	f := newHealthFixture(t)
	uuids := f.uuids()
	reports, stop := f.watch(t, uuids)

	// Application errors on GPU 1 are ignored; XID 79 on GPU 2 is reported,
	// once; a double-bit ECC error on GPU 3 is reported.
	for _, xid := range []uint64{13, 31, 43, 45, 68, 109} {
		f.events <- f.xid(1, xid)
	}
	f.events <- f.xid(2, 79)
	f.events <- f.xid(2, 79)
	f.events <- f.xid(2, 48)
	f.events <- nvml.EventData{Device: f.s.Devices[3], EventType: nvml.EventTypeDoubleBitEccError}
	f.events <- nvml.EventData{Device: f.s.Devices[4], EventType: nvml.EventTypeSingleBitEccError}
	f.events <- f.xid(5, 12345)

	want := []healthReport{
		{uuids[2], "XID 79 (GPU has fallen off the bus)"},
		{uuids[3], "double-bit ECC error (uncorrectable)"},
		{uuids[5], "XID 12345"},
	}
	for _, w := range want {
		if got := nextReport(t, reports); got != w {
			t.Errorf("report %+v, want %+v", got, w)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("WatchHealth: %v", err)
	}
	select {
	case r := <-reports:
		t.Errorf("unexpected report %+v", r)
	default:
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range uuids {
		if m := f.registered[u]; m != nvml.EventTypeXidCriticalError|nvml.EventTypeDoubleBitEccError {
			t.Errorf("GPU %s registered for events %#x, want XID and double-bit ECC", u, m)
		}
	}
	if !f.freed || f.inits != 1 || f.shutdowns != 1 {
		t.Errorf("event set freed %v, Init %d, Shutdown %d; want true, 1, 1", f.freed, f.inits, f.shutdowns)
	}
}

func TestWatchHealthCancel(t *testing.T) {
	f := newHealthFixture(t)
	reports, stop := f.watch(t, f.uuids())
	// Let it wait (and time out) at least once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := f.waits
		f.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("WatchHealth does not wait")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	if err := stop(); err != nil {
		t.Errorf("WatchHealth: %v", err)
	}
	t.Logf("returned %v after the cancel", time.Since(t0))
	if len(reports) != 0 {
		t.Errorf("reports from healthy GPUs: %+v", <-reports)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.freed || f.shutdowns != 1 {
		t.Errorf("event set freed %v, Shutdown %d", f.freed, f.shutdowns)
	}
}

// GPUs without event support are skipped quietly; the others are watched.
func TestWatchHealthNotSupported(t *testing.T) {
	f := newHealthFixture(t)
	uuids := f.uuids()
	mockDevice(f.s, 0).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	mockDevice(f.s, 1).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
	// Supports events, but not these.
	mockDevice(f.s, 2).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return nvml.EventTypePState, nvml.SUCCESS }
	reports, stop := f.watch(t, uuids[:4])
	f.events <- f.xid(3, 62)
	if got, want := nextReport(t, reports), (healthReport{uuids[3], "XID 62 (internal micro-controller halt)"}); got != want {
		t.Errorf("report %+v, want %+v", got, want)
	}
	// GPU 3 was the only one watched: with it reported, nothing is left.
	stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.registered) != 1 || f.registered[uuids[3]] == 0 {
		t.Errorf("registered %v, want GPU 3 only", f.registered)
	}

	// None supports events: WatchHealth returns at once, reporting nothing.
	g := newHealthFixture(t)
	for i := range g.s.Devices {
		mockDevice(g.s, i).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	}
	g.s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
				t.Error("Wait with no GPU registered")
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	err := WatchHealth(context.Background(), g.s, g.uuids(), func(u, r string) { t.Errorf("report %s: %s", u, r) })
	if err != nil {
		t.Errorf("WatchHealth with no event support: %v", err)
	}
}

// A GPU that NVML cannot reach at the start, or that the wait says is lost,
// is reported.
func TestWatchHealthLost(t *testing.T) {
	f := newHealthFixture(t)
	uuids := f.uuids()
	mockDevice(f.s, 1).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_GPU_IS_LOST }
	reports, stop := f.watch(t, append(uuids, "GPU-not-there"))
	for _, want := range []healthReport{
		{uuids[1], "NVML: ERROR_GPU_IS_LOST"},
		{"GPU-not-there", "NVML cannot reach the GPU: ERROR_INVALID_ARGUMENT"},
	} {
		if got := nextReport(t, reports); got != want {
			t.Errorf("report %+v, want %+v", got, want)
		}
	}
	// GPU 6 falls off the bus: the wait fails, and a probe finds it.
	mockDevice(f.s, 6).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	f.waitErr <- nvml.ERROR_GPU_IS_LOST
	if got, want := nextReport(t, reports), (healthReport{uuids[6], "NVML: ERROR_GPU_IS_LOST"}); got != want {
		t.Errorf("report %+v, want %+v", got, want)
	}
	// An XID that NVML does not tie to a GPU: all the others are reported.
	f.events <- nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	seen := map[string]bool{}
	for range len(uuids) - 2 {
		r := nextReport(t, reports)
		if r.reason != "XID 79 (GPU has fallen off the bus) on an unidentified GPU" || seen[r.uuid] {
			t.Errorf("report %+v", r)
		}
		seen[r.uuid] = true
	}
	if seen[uuids[1]] || seen[uuids[6]] {
		t.Errorf("a GPU reported twice: %v", seen)
	}
	// Every GPU reported: WatchHealth has returned by itself.
	if err := stop(); err != nil {
		t.Errorf("WatchHealth: %v", err)
	}
}

func TestWatchHealthInitFails(t *testing.T) {
	s := dgxh100.New()
	s.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
	err := WatchHealth(context.Background(), s, []string{"GPU-1"}, func(string, string) {})
	if !errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED) {
		t.Errorf("err = %v", err)
	}
	if err := WatchHealth(context.Background(), nil, []string{"GPU-1"}, nil); err == nil {
		t.Error("nil interface: no error")
	}
}
