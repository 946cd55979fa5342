package workerid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"w-0123456789ab", true},
		{"w-a", true},
		{"w-" + strings.Repeat("f", 64), true},
		{"w-" + strings.Repeat("f", 65), false},
		{"w-", false},
		{"w", false},
		{"", false},
		{"x-0123", false},
		{"w-0123456789AB", false},
		{"w-../etc/passwd", false},
		{"w-12/34", false},
	} {
		if got := Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v; want %v", tt.id, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := New()
		if !Valid(id) || len(id) != len(Prefix)+12 || !strings.HasPrefix(id, Prefix) {
			t.Fatalf("New() = %q: not a 12-digit worker id", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}
