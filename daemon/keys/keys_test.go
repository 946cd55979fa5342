package keys

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/auth"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Date(2025, 6, 3, 9, 0, 0, 123, time.UTC) }
	return s, path
}

// unused returns ks without their last-use times (which Lookup sets).
func unused(ks ...Key) []Key {
	out := make([]Key, len(ks))
	for i, k := range ks {
		k.LastUsedAt = time.Time{}
		out[i] = k
	}
	return out
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		err  string // "" when valid
	}{
		{"ci", ""},
		{"grafana scraper", ""},
		{"ünïcode-ok", ""},
		{strings.Repeat("x", 63), ""},
		{strings.Repeat("é", 63), ""},
		{"", "name: required (1 to 63 characters)"},
		{strings.Repeat("x", 64), "name: 64 characters; at most 63"},
		{" ci", "name: leading or trailing space"},
		{"ci\t", "name: leading or trailing space"},
		{"c\ni", "name: control or non-printable character"},
		{"c\x00i", "name: control or non-printable character"},
		{"\xff", "name: not valid UTF-8"},
	}
	for _, tt := range tests {
		err := CheckName(tt.name)
		var ne *NameError
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("CheckName(%q) = %v, want nil", tt.name, err)
		case tt.err != "" && (err == nil || err.Error() != tt.err || !errors.As(err, &ne)):
			t.Errorf("CheckName(%q) = %v, want NameError %q", tt.name, err, tt.err)
		}
	}
}

func TestCreateListRevoke(t *testing.T) {
	s, path := openTemp(t)
	if s.Valid("anything") || s.Valid("") {
		t.Fatal("empty store accepts a key")
	}
	ci, ciSecret, err := s.Create(Spec{Name: "ci", Scope: auth.Admin})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ci.ID, "k-") || len(ci.ID) != 14 || ci.Name != "ci" || !ci.CreatedAt.Equal(time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("created %+v", ci)
	}
	if !strings.HasPrefix(ciSecret, SecretPrefix) || len(ciSecret) != len(SecretPrefix)+64 {
		t.Errorf("secret %q", ciSecret)
	}
	graf, grafSecret, err := s.Create(Spec{Name: "grafana", Scope: auth.Admin})
	if err != nil {
		t.Fatal(err)
	}
	if graf.ID == ci.ID || grafSecret == ciSecret {
		t.Fatal("two keys share an id or a secret")
	}

	tests := []struct {
		secret string
		want   bool
	}{
		{ciSecret, true},
		{grafSecret, true},
		{ciSecret + "x", false},
		{ciSecret[:len(ciSecret)-1], false},
		{strings.ToUpper(ciSecret), false},
		{ci.ID, false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.Valid(tt.secret); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.secret, got, tt.want)
		}
	}

	if got := s.List(); len(got) != 2 || !reflect.DeepEqual(unused(got...), []Key{ci, graf}) {
		t.Errorf("List = %+v", got)
	}
	if _, _, err := s.Create(Spec{Name: "ci", Scope: auth.Admin}); !errors.Is(err, ErrExists) {
		t.Errorf("second key named ci: %v, want ErrExists", err)
	}
	if _, _, err := s.Create(Spec{Name: "", Scope: auth.Admin}); err == nil {
		t.Error("empty name accepted")
	}

	// Nothing secret on disk; mode 0600; no temporary files left.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), ciSecret) || strings.Contains(string(b), grafSecret) || strings.Contains(string(b), ciSecret[len(SecretPrefix):]) {
		t.Errorf("the key file holds a secret:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("data dir holds %d entries, want only %s", len(ents), FileName)
	}

	// Reopened: the same keys, still valid.
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.List(); len(got) != 2 || !reflect.DeepEqual(unused(got...), []Key{ci, graf}) {
		t.Errorf("reopened List = %+v", got)
	}
	if !s2.Valid(ciSecret) || !s2.Valid(grafSecret) {
		t.Error("reopened store refuses a key")
	}

	got, err := s2.Revoke(ci.ID)
	if err != nil || !reflect.DeepEqual(unused(got)[0], ci) {
		t.Fatalf("Revoke = %+v, %v", got, err)
	}
	if s2.Valid(ciSecret) || !s2.Valid(grafSecret) {
		t.Error("after revoking ci: ci still valid, or grafana not")
	}
	if _, err := s2.Revoke(ci.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second revoke: %v, want ErrNotFound", err)
	}
	if _, err := s2.Get(ci.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get revoked: %v", err)
	}
	if k, err := s2.Get(graf.ID); err != nil || !reflect.DeepEqual(unused(k)[0], graf) {
		t.Errorf("Get = %+v, %v", k, err)
	}
	// The name is free again.
	if _, _, err := s2.Create(Spec{Name: "ci", Scope: auth.Admin}); err != nil {
		t.Errorf("re-create ci: %v", err)
	}
	s3, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Valid(ciSecret) || !s3.Valid(grafSecret) || len(s3.List()) != 2 {
		t.Errorf("reopened after revoke: %+v", s3.List())
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	good := `{"version":1,"keys":[{"id":"k-1","name":"a","createdAt":"2025-06-03T09:00:00Z","sha256":"` + strings.Repeat("ab", 32) + `"}]}`
	tests := []struct {
		name, content, err string
	}{
		{"good", good, ""},
		{"empty list", `{"version":1,"keys":[]}`, ""},
		{"not json", `{`, "is not a key file"},
		{"future version", `{"version":3,"keys":[]}`, "version 3"},
		{"bad scope", `{"version":2,"keys":[{"id":"k-1","name":"a","scope":"root","sha256":"` + strings.Repeat("ab", 32) + `"}]}`, "want admin, invoke or read"},
		{"bad hash", strings.Replace(good, strings.Repeat("ab", 32), "xyz", 1), "malformed sha256"},
		{"short hash", strings.Replace(good, strings.Repeat("ab", 32), "abab", 1), "malformed sha256"},
		{"no id", strings.Replace(good, `"k-1"`, `""`, 1), "empty or repeated key id"},
		{"repeated id", strings.Replace(good, `}]}`, `},{"id":"k-1","name":"b","sha256":"`+strings.Repeat("cd", 32)+`"}]}`, 1), "empty or repeated key id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path)
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Open = %v, want error containing %q", err, tt.err)
			}
		})
	}
	// A missing file is an empty store; nothing is written until a change.
	path := filepath.Join(dir, "missing", FileName)
	s, err := Open(path)
	if err != nil || len(s.List()) != 0 {
		t.Fatalf("Open missing = %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Open created the file: %v", err)
	}
	// Its directory does not exist: Create fails and changes nothing.
	if _, _, err := s.Create(Spec{Name: "x", Scope: auth.Admin}); err == nil || len(s.List()) != 0 {
		t.Errorf("Create without a directory: %v, %d keys", err, len(s.List()))
	}
}

func TestFileFormat(t *testing.T) {
	s, path := openTemp(t)
	k, secret, err := s.Create(Spec{Name: "ci", Scope: auth.Admin})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var f struct {
		Version int              `json:"version"`
		Keys    []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || len(f.Keys) != 1 {
		t.Fatalf("file: %s", b)
	}
	want := map[string]any{"id": k.ID, "name": "ci", "scope": "admin", "createdAt": "2025-06-03T09:00:00Z",
		"sha256": "" /* checked below */}
	for field := range want {
		if _, ok := f.Keys[0][field]; !ok {
			t.Errorf("file lacks %q: %s", field, b)
		}
	}
	if len(f.Keys[0]) != len(want) {
		t.Errorf("file has fields %v, want only %v", f.Keys[0], want)
	}
	if f.Keys[0]["createdAt"] != "2025-06-03T09:00:00Z" {
		t.Errorf("createdAt %v", f.Keys[0]["createdAt"])
	}
	s2, _ := Open(path)
	if !s2.Valid(secret) {
		t.Error("secret not valid after reopening")
	}
	if _, err := s2.Revoke(k.ID); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if !strings.Contains(string(b), `"keys": []`) {
		t.Errorf("after revoking the last key: %s", b)
	}
}

func TestConcurrent(t *testing.T) {
	s, path := openTemp(t)
	var wg sync.WaitGroup
	secrets := make([]string, 16)
	for i := range secrets {
		wg.Go(func() {
			_, secret, err := s.Create(Spec{Name: "k" + string(rune('a'+i)), Scope: auth.Invoke})
			if err != nil {
				t.Error(err)
			}
			secrets[i] = secret
			for range 100 {
				if !s.Valid(secret) {
					t.Error("fresh key not valid")
					return
				}
			}
		})
	}
	wg.Wait()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.List()) != len(secrets) {
		t.Fatalf("%d keys on disk, want %d", len(s2.List()), len(secrets))
	}
	for _, sec := range secrets {
		if !s2.Valid(sec) {
			t.Error("a key was lost")
		}
	}
}

func BenchmarkValid(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), FileName))
	if err != nil {
		b.Fatal(err)
	}
	var secret string
	for i := range 50 {
		_, sec, err := s.Create(Spec{Name: "key" + string(rune('A'+i)), Scope: auth.Read})
		if err != nil {
			b.Fatal(err)
		}
		secret = sec
	}
	for b.Loop() {
		if !s.Valid(secret) {
			b.Fatal("not valid")
		}
	}
}
