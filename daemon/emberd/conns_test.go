package emberd

import "testing"

func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		flag             int
		softFiles        uint64
		wantMax, wantRes int
	}{
		{0, 1024, 512, 64},
		{0, 20000, 8192, 1024},
		{0, 1 << 20, 8192, 1024},
		{0, 1, 1, 16},
		{64, 1 << 20, 64, 16},
		{1000, 1024, 1000, 125},
		{100000, 1 << 20, 100000, 1024},
	} {
		gotMax, gotRes := connectionLimits(tc.flag, tc.softFiles)
		if gotMax != tc.wantMax || gotRes != tc.wantRes {
			t.Errorf("connectionLimits(%d, %d) = %d, %d; want %d, %d", tc.flag, tc.softFiles, gotMax, gotRes, tc.wantMax, tc.wantRes)
		}
	}
}
