package oci

import "testing"

func TestExitStatusString(t *testing.T) {
	for _, tc := range []struct {
		st   ExitStatus
		want string
	}{
		{ExitStatus{Code: 1}, "exited with code 1"},
		{ExitStatus{Code: -1, Signal: "killed"}, "was killed by signal killed"},
		{ExitStatus{Code: -1, Signal: "killed", OOMKilled: true}, "was killed: out of memory"},
		{ExitStatus{Code: -1, Signal: "killed", OOMKilled: true, MemoryLimit: 2 << 30}, "was killed: out of memory (limit 2 GiB)"},
		{ExitStatus{Code: 1, OOMKilled: true, MemoryLimit: 1536 << 20}, "was killed: out of memory (limit 1536 MiB)"},
	} {
		if got := tc.st.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.st, got, tc.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 bytes", 1023: "1023 bytes", 1024: "1 KiB", 4097: "4097 bytes",
		64 << 20: "64 MiB", 2 << 30: "2 GiB", 3 << 40: "3 TiB", (1 << 30) + (1 << 20): "1025 MiB",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
