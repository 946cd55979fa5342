package gpu

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// mockDevice returns the mock server's i-th device, to change its answers.
func mockDevice(s *server.Server, i int) *server.Device {
	return s.Devices[i].(*server.Device)
}

func TestDiscoverDGXH100(t *testing.T) {
	s := dgxh100.New()
	inits, shutdowns := 0, 0
	s.InitFunc = func() nvml.Return { inits++; return nvml.SUCCESS }
	s.ShutdownFunc = func() nvml.Return { shutdowns++; return nvml.SUCCESS }

	inv, err := Discover(s)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if inits != 1 || shutdowns != 1 {
		t.Errorf("Init called %d times, Shutdown %d; want 1 and 1", inits, shutdowns)
	}
	if inv.DriverVersion != "550.54.15" {
		t.Errorf("DriverVersion = %q, want 550.54.15", inv.DriverVersion)
	}
	if inv.CUDADriverVersion != 12040 || inv.CUDAVersion() != "12.4" {
		t.Errorf("CUDA driver version = %d (%q), want 12040 (12.4)", inv.CUDADriverVersion, inv.CUDAVersion())
	}
	if inv.NoDriver != "" {
		t.Errorf("NoDriver = %q with a driver", inv.NoDriver)
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(inv.Devices))
	}
	seen := map[string]bool{}
	for i, d := range inv.Devices {
		md := mockDevice(s, i)
		want := Device{
			Index:       i,
			UUID:        md.UUID,
			Name:        "NVIDIA H100 80GB HBM3",
			Minor:       i,
			MemoryTotal: 80 << 30,
			MemoryFree:  0, // the mock reports no free memory
		}
		if d != want {
			t.Errorf("GPU %d = %+v, want %+v", i, d, want)
		}
		if !strings.HasPrefix(d.UUID, "GPU-") || seen[d.UUID] {
			t.Errorf("GPU %d: UUID %q not a fresh GPU- UUID", i, d.UUID)
		}
		seen[d.UUID] = true
		if got, ok := inv.Lookup(d.UUID); !ok || got.Index != i {
			t.Errorf("Lookup(%s) = %+v, %v", d.UUID, got, ok)
		}
	}
	if got := inv.UUIDs(); len(got) != 8 || got[0] != inv.Devices[0].UUID || got[7] != inv.Devices[7].UUID {
		t.Errorf("UUIDs() = %v", got)
	}
}

func TestDiscoverInitFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ret      nvml.Return
		wantErr  bool
		noDriver bool
	}{
		{"library not found", nvml.ERROR_LIBRARY_NOT_FOUND, false, true},
		{"kernel module not loaded", nvml.ERROR_DRIVER_NOT_LOADED, false, true},
		{"no permission", nvml.ERROR_NO_PERMISSION, true, false},
		{"driver/library mismatch", nvml.ERROR_LIB_RM_VERSION_MISMATCH, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dgxh100.New()
			s.InitFunc = func() nvml.Return { return tc.ret }
			s.ShutdownFunc = func() nvml.Return {
				t.Error("Shutdown called after a failed Init")
				return nvml.SUCCESS
			}
			inv, err := Discover(s)
			if tc.wantErr {
				if !errors.Is(err, tc.ret) {
					t.Fatalf("err = %v, want one wrapping %v", err, tc.ret)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want none (no driver is zero GPUs)", err)
			}
			if len(inv.Devices) != 0 || (inv.NoDriver != "") != tc.noDriver {
				t.Errorf("inventory = %+v", inv)
			}
		})
	}
}

// The real library on a machine without the NVIDIA driver (this one, CI):
// dlopen fails, which must read as zero GPUs.
func TestDiscoverRealNVML(t *testing.T) {
	inv, err := Discover(nvml.New())
	if err != nil {
		t.Fatalf("Discover(nvml.New()): %v", err)
	}
	if len(inv.Devices) == 0 && inv.NoDriver == "" {
		t.Errorf("zero GPUs but NoDriver empty: %+v", inv)
	}
	t.Logf("host: %d GPUs, driver %q, %s", len(inv.Devices), inv.DriverVersion, inv.NoDriver)
}

func TestDiscoverDeviceStates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *server.Server)
		check func(t *testing.T, inv Inventory, err error)
	}{
		{
			name: "lost GPU is listed unhealthy, others fine",
			setup: func(s *server.Server) {
				mockDevice(s, 3).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
					return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
				}
			},
			check: func(t *testing.T, inv Inventory, err error) {
				if err != nil {
					t.Fatal(err)
				}
				if len(inv.Devices) != 8 {
					t.Fatalf("%d GPUs", len(inv.Devices))
				}
				d := inv.Devices[3]
				if d.Healthy() || !errors.Is(d.Err, nvml.ERROR_GPU_IS_LOST) {
					t.Errorf("GPU 3 Err = %v, want ERROR_GPU_IS_LOST", d.Err)
				}
				for i, d := range inv.Devices {
					if i != 3 && !d.Healthy() {
						t.Errorf("GPU %d unhealthy: %v", i, d.Err)
					}
				}
				u := inv.UUIDs()
				if len(u) != 7 {
					t.Errorf("UUIDs() has %d, want the 7 healthy", len(u))
				}
				for _, x := range u {
					if x == d.UUID {
						t.Errorf("UUIDs() lists the lost GPU")
					}
				}
			},
		},
		{
			name: "MIG mode",
			setup: func(s *server.Server) {
				// MIG on, no instances made yet.
				d := mockDevice(s, 6)
				d.MigMode = nvml.DEVICE_MIG_ENABLE
				d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
				d.GetMigDeviceHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_NOT_FOUND }
			},
			check: func(t *testing.T, inv Inventory, err error) {
				if err != nil {
					t.Fatal(err)
				}
				for i, d := range inv.Devices {
					if d.MIGEnabled != (i == 6) {
						t.Errorf("GPU %d MIGEnabled = %v", i, d.MIGEnabled)
					}
				}
				if u := inv.UUIDs(); len(u) != 7 || slices.Contains(u, inv.Devices[6].UUID) {
					t.Errorf("UUIDs() = %v; want the 7 GPUs without MIG", u)
				}
			},
		},
		{
			name: "MIG not supported is MIG off",
			setup: func(s *server.Server) {
				mockDevice(s, 0).GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED }
			},
			check: func(t *testing.T, inv Inventory, err error) {
				if err != nil || inv.Devices[0].MIGEnabled || !inv.Devices[0].Healthy() {
					t.Errorf("GPU 0 = %+v, err %v", inv.Devices[0], err)
				}
			},
		},
		{
			name: "minor differs from index",
			setup: func(s *server.Server) {
				for i := range s.Devices {
					mockDevice(s, i).Minor = 7 - i
				}
			},
			check: func(t *testing.T, inv Inventory, err error) {
				if err != nil {
					t.Fatal(err)
				}
				for i, d := range inv.Devices {
					if d.Index != i || d.Minor != 7-i {
						t.Errorf("GPU %d: index %d minor %d", i, d.Index, d.Minor)
					}
				}
			},
		},
		{
			name: "device count fails",
			setup: func(s *server.Server) {
				s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			check: func(t *testing.T, _ Inventory, err error) {
				if !errors.Is(err, nvml.ERROR_UNKNOWN) {
					t.Errorf("err = %v, want ERROR_UNKNOWN wrapped", err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dgxh100.New()
			tc.setup(s)
			inv, err := Discover(s)
			tc.check(t, inv, err)
		})
	}
}

func TestCheck(t *testing.T) {
	s := dgxh100.New()
	inv, err := Discover(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(s, inv.UUIDs()...); err != nil {
		t.Fatalf("Check on healthy GPUs: %v", err)
	}
	lost := inv.Devices[4].UUID
	mockDevice(s, 4).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	err = Check(s, inv.Devices[1].UUID, lost, "GPU-not-there")
	if !errors.Is(err, nvml.ERROR_GPU_IS_LOST) || !strings.Contains(err.Error(), lost) || !strings.Contains(err.Error(), "GPU-not-there") {
		t.Errorf("Check = %v; want the lost GPU and the unknown one named", err)
	}
	if strings.Contains(err.Error(), inv.Devices[1].UUID) {
		t.Errorf("Check blames a healthy GPU: %v", err)
	}
}
