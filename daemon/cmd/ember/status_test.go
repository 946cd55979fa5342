package main

import (
	"testing"
	"time"
)

func TestCountsCell(t *testing.T) {
	order := []string{"initializing", "idle", "running"}
	tests := []struct {
		counts map[string]int
		want   string
	}{
		{nil, "none"},
		{map[string]int{"idle": 0, "running": 0}, "none"},
		{map[string]int{"running": 2, "idle": 1}, "1 idle, 2 running"},
		{map[string]int{"zombie": 1, "frozen": 3, "idle": 1}, "1 idle, 3 frozen, 1 zombie"},
	}
	for _, tt := range tests {
		if got := countsCell(tt.counts, order); got != tt.want {
			t.Errorf("countsCell(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

func TestFormatUptime(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{42*time.Second + 300*time.Millisecond, "42s"},
		{4*time.Minute + 10*time.Second, "4m10s"},
		{2*time.Hour + 5*time.Minute + 59*time.Second, "2h5m"},
		{76*time.Hour + 3*time.Minute, "3d4h"},
	}
	for _, tt := range tests {
		if got := formatUptime(tt.d); got != tt.want {
			t.Errorf("formatUptime(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
