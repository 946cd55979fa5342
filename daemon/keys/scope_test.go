package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/auth"
)

func TestCreateSpec(t *testing.T) {
	s, _ := openTemp(t)
	tests := []struct {
		name  string
		spec  Spec
		field string // "" when valid
	}{
		{"admin", Spec{Name: "a", Scope: auth.Admin}, ""},
		{"read", Spec{Name: "r", Scope: auth.Read, ExpiresIn: time.Hour}, ""},
		{"invoke listed", Spec{Name: "i", Scope: auth.Invoke, Endpoints: []string{"ep1", "ep2"}, ExpiresIn: 30 * 24 * time.Hour}, ""},
		{"no scope", Spec{Name: "x"}, "scope"},
		{"bad scope", Spec{Name: "x", Scope: "root"}, "scope"},
		{"endpoints on read", Spec{Name: "x", Scope: auth.Read, Endpoints: []string{"ep1"}}, "endpoints"},
		{"empty endpoint", Spec{Name: "x", Scope: auth.Invoke, Endpoints: []string{""}}, "endpoints"},
		{"too short", Spec{Name: "x", Scope: auth.Read, ExpiresIn: 59 * time.Second}, "expiresIn"},
		{"too long", Spec{Name: "x", Scope: auth.Read, ExpiresIn: MaxExpiresIn + time.Hour}, "expiresIn"},
		{"bad name", Spec{Name: "", Scope: auth.Read}, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, secret, err := s.Create(tt.spec)
			if tt.field != "" {
				var se *SpecError
				var ne *NameError
				switch {
				case err == nil:
					t.Fatalf("Create(%+v) succeeded, want an error on %s", tt.spec, tt.field)
				case tt.field == "name" && !errors.As(err, &ne):
					t.Fatalf("Create = %v, want a NameError", err)
				case tt.field != "name" && (!errors.As(err, &se) || se.Field != tt.field):
					t.Fatalf("Create = %v, want a SpecError on %s", err, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.Lookup(secret)
			if err != nil {
				t.Fatal(err)
			}
			if c.KeyID != k.ID || c.Name != tt.spec.Name || c.Scope != tt.spec.Scope || strings.Join(c.Endpoints, ",") != strings.Join(tt.spec.Endpoints, ",") {
				t.Errorf("Lookup = %+v, want %+v", c, tt.spec)
			}
			if want := k.CreatedAt.Add(tt.spec.ExpiresIn); tt.spec.ExpiresIn > 0 && (!k.ExpiresAt.Equal(want) || !c.ExpiresAt.Equal(want)) {
				t.Errorf("expires %v (caller %v), want %v", k.ExpiresAt, c.ExpiresAt, want)
			}
		})
	}
}

func TestLookupExpiryAndAdmin(t *testing.T) {
	s, _ := openTemp(t)
	var now atomic.Int64
	start := time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC)
	now.Store(start.Unix())
	s.now = func() time.Time { return time.Unix(now.Load(), 0) }
	k, secret, err := s.Create(Spec{Name: "short", Scope: auth.Read, ExpiresIn: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	admin := "ember_" + strings.Repeat("a", 40)
	s.SetAdmin(admin, "")
	for _, tt := range []struct {
		at     time.Duration
		secret string
		err    error // nil, ErrMissing, ErrWrong, or an *ExpiredError (any)
		id     string
	}{
		{0, secret, nil, k.ID},
		{59 * time.Second, secret, nil, k.ID},
		{time.Minute, secret, &ExpiredError{}, k.ID},
		{time.Hour, secret, &ExpiredError{}, k.ID},
		{time.Hour, admin, nil, auth.BootstrapKeyID},
		{0, admin + "x", ErrWrong, ""},
		{0, "", ErrMissing, ""},
		{0, k.ID, ErrWrong, ""},
	} {
		now.Store(start.Add(tt.at).Unix())
		c, err := s.Lookup(tt.secret)
		var ee *ExpiredError
		switch tt.err.(type) {
		case nil:
			if err != nil || c.KeyID != tt.id {
				t.Errorf("at +%v: Lookup = %+v, %v; want key %s", tt.at, c, err, tt.id)
			}
		case *ExpiredError:
			if !errors.As(err, &ee) || ee.Caller.KeyID != tt.id || !ee.Caller.ExpiresAt.Equal(start.Add(time.Minute)) {
				t.Errorf("at +%v: Lookup = %v; want expired", tt.at, err)
			} else if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "2025-06-03T09:01:00Z") {
				t.Errorf("expired error %q: want the expiry and no secret", err)
			}
		default:
			if !errors.Is(err, tt.err) {
				t.Errorf("at +%v: Lookup(%.8s...) = %v, want %v", tt.at, tt.secret, err, tt.err)
			}
		}
	}
	if c, _ := s.Lookup(admin); c.Scope != auth.Admin || c.Name != auth.BootstrapKeyName {
		t.Errorf("admin caller %+v", c)
	}
}

func TestVersion1File(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	// Written by an emberd before scopes: the secret's hash is that of
	// "ember_old".
	old := `{"version":1,"keys":[{"id":"k-000000000001","name":"old","createdAt":"2025-06-03T09:00:00Z","sha256":"` + hexSHA("ember_old") + `"}]}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Lookup("ember_old")
	if err != nil || c.Scope != auth.Admin || !c.ExpiresAt.IsZero() || c.KeyID != "k-000000000001" {
		t.Fatalf("version 1 key: %+v, %v; want an admin key that never expires", c, err)
	}
	// The next write is version 2, and keeps the old key as admin.
	if _, _, err := s.Create(Spec{Name: "new", Scope: auth.Read}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"version": 2`) || !strings.Contains(string(b), `"scope": "admin"`) {
		t.Errorf("rewritten file:\n%s", b)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s2.Lookup("ember_old"); err != nil || c.Scope != auth.Admin {
		t.Errorf("reopened: %+v, %v", c, err)
	}
}

func TestLastUsed(t *testing.T) {
	s, path := openTemp(t)
	var now atomic.Int64
	now.Store(time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC).Unix())
	s.now = func() time.Time { return time.Unix(now.Load(), 0) }
	k, secret, err := s.Create(Spec{Name: "ci", Scope: auth.Invoke})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(k.ID); !got.LastUsedAt.IsZero() {
		t.Fatalf("unused key has lastUsedAt %v", got.LastUsedAt)
	}
	before, _ := os.ReadFile(path)
	now.Add(90)
	if _, err := s.Lookup(secret); err != nil {
		t.Fatal(err)
	}
	want := time.Unix(now.Load(), 0).UTC()
	if got, _ := s.Get(k.ID); !got.LastUsedAt.Equal(want) {
		t.Errorf("lastUsedAt %v, want %v", got.LastUsedAt, want)
	}
	// Not written per request...
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Errorf("a lookup rewrote the file")
	}
	// ...but by Run when it stops (and once a minute).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, func(err error) { t.Error(err) }) }()
	cancel()
	<-done
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.Get(k.ID); !got.LastUsedAt.Equal(want) {
		t.Errorf("reopened lastUsedAt %v, want %v", got.LastUsedAt, want)
	}
	// Nothing changed since: Flush writes nothing.
	fi1, _ := os.Stat(path)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); !fi1.ModTime().Equal(fi2.ModTime()) || !os.SameFile(fi1, fi2) {
		t.Error("Flush rewrote an unchanged file")
	}
}

func TestRotateAdmin(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RotateAdmin(); !errors.Is(err, ErrNoAdminFile) {
		t.Errorf("RotateAdmin without a file: %v", err)
	}
	file := filepath.Join(dir, "api.key")
	old := "ember_" + strings.Repeat("0", 48)
	if err := os.WriteFile(file, []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.SetAdmin(old, file)
	secret, got, err := s.RotateAdmin()
	if err != nil || got != file {
		t.Fatalf("RotateAdmin = %q, %v", got, err)
	}
	if _, err := s.Lookup(old); !errors.Is(err, ErrWrong) {
		t.Errorf("old admin key after rotation: %v, want ErrWrong", err)
	}
	if c, err := s.Lookup(secret); err != nil || c.KeyID != auth.BootstrapKeyID {
		t.Errorf("new admin key: %+v, %v", c, err)
	}
	b, _ := os.ReadFile(file)
	if string(b) != secret+"\n" || len(secret) < MinAdminKeyLen {
		t.Errorf("api.key holds %q, want the new key", b)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("api.key mode %v", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries in the directory; a temporary file was left", len(ents))
	}
}

func hexSHA(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// BenchmarkLookup: a request's key lookup (hash, map, expiry, last use)
// against its floor, the SHA-256 of the secret alone, in the same run.
func BenchmarkLookup(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), FileName))
	if err != nil {
		b.Fatal(err)
	}
	var secret string
	for i := range 50 {
		_, sec, err := s.Create(Spec{Name: "key" + string(rune('A'+i)), Scope: auth.Invoke, ExpiresIn: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		secret = sec
	}
	b.Run("sha256 only", func(b *testing.B) {
		for b.Loop() {
			sha256.Sum256([]byte(secret))
		}
	})
	b.Run("Lookup", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Lookup(secret); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Lookup parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Lookup(secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
