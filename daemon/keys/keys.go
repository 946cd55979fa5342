// Package keys keeps emberd's named admin API keys.
//
// Each key has a short random ID, a name chosen by the operator and a
// creation time; only the SHA-256 of its secret is stored, so the secret is
// seen once, when the key is created. The keys live in one JSON file in the
// data directory (mode 0600), rewritten atomically (a temporary file, fsync,
// rename) on every change, so a crash leaves either the old set or the new
// one.
//
// The bootstrap admin key (DATA-DIR/api.key, created on first start) is not
// in the store: it stays valid whatever the store holds and cannot be
// revoked through the API. Replace that file and restart emberd to change
// it.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// FileName is the store's file in the data directory.
const FileName = "keys.json"

// MaxNameLen is the longest key name, in characters.
const MaxNameLen = 63

// SecretPrefix starts every secret, as it starts the bootstrap key, so that
// secret scanners and people recognise an Ember key.
const SecretPrefix = "ember_"

var (
	// ErrNotFound is returned (wrapped) for an unknown key ID.
	ErrNotFound = errors.New("API key not found")
	// ErrExists is returned (wrapped) when a live key already has the name.
	ErrExists = errors.New("API key name already in use")
)

// NameError says why a key name was refused.
type NameError struct{ Msg string }

func (e *NameError) Error() string { return "name: " + e.Msg }

// Key is a key as listed: never its secret.
type Key struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// record is a key as stored.
type record struct {
	Key
	// SHA256 is the hex SHA-256 of the secret.
	SHA256 string `json:"sha256"`
}

// file is the JSON document on disk.
type file struct {
	Version int      `json:"version"`
	Keys    []record `json:"keys"`
}

// Store holds the named keys. It is safe for concurrent use.
type Store struct {
	path string
	now  func() time.Time

	// mu serialises changes (and their file writes); reads take it shared.
	mu     sync.RWMutex
	keys   []record            // creation order
	byHash map[[32]byte]string // secret hash -> key ID
}

// Open loads the store at path (usually DATA-DIR/keys.json); a missing file
// is an empty store, created on the first Create.
func Open(path string) (*Store, error) {
	s := &Store{path: path, now: time.Now, byHash: map[[32]byte]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("API keys: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("API keys: %s is not a key file: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("API keys: %s has version %d; this emberd reads version 1", path, f.Version)
	}
	seen := map[string]bool{}
	for _, r := range f.Keys {
		h, err := hex.DecodeString(r.SHA256)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("API keys: %s: key %q has a malformed sha256", path, r.ID)
		}
		if r.ID == "" || seen[r.ID] {
			return nil, fmt.Errorf("API keys: %s: empty or repeated key id %q", path, r.ID)
		}
		seen[r.ID] = true
		s.keys = append(s.keys, r)
		s.byHash[[32]byte(h)] = r.ID
	}
	return s, nil
}

// CheckName validates a key name: 1 to MaxNameLen characters, printable,
// without leading or trailing space.
func CheckName(name string) error {
	n := utf8.RuneCountInString(name)
	switch {
	case name == "":
		return &NameError{"required (1 to 63 characters)"}
	case !utf8.ValidString(name):
		return &NameError{"not valid UTF-8"}
	case n > MaxNameLen:
		return &NameError{fmt.Sprintf("%d characters; at most %d", n, MaxNameLen)}
	case strings.TrimSpace(name) != name:
		return &NameError{"leading or trailing space"}
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return &NameError{"control or non-printable character"}
	}
	return nil
}

// Create makes a key named name and returns it with its secret, which is
// not kept and cannot be shown again.
func (s *Store) Create(name string) (Key, string, error) {
	if err := CheckName(name); err != nil {
		return Key{}, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.keys {
		if r.Name == name {
			return Key{}, "", fmt.Errorf("%w: %q (key %s); revoke it first or pick another name", ErrExists, name, r.ID)
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Key{}, "", err
	}
	secret := SecretPrefix + hex.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(secret))
	id := ""
	for id == "" || s.indexLocked(id) >= 0 {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Key{}, "", err
		}
		id = "k-" + hex.EncodeToString(b[:])
	}
	r := record{Key: Key{ID: id, Name: name, CreatedAt: s.now().UTC().Truncate(time.Second)}, SHA256: hex.EncodeToString(h[:])}
	next := append(slices.Clip(s.keys), r)
	if err := s.writeLocked(next); err != nil {
		return Key{}, "", err
	}
	s.keys = next
	s.byHash[h] = id
	return r.Key, secret, nil
}

// List returns the keys, oldest first, without secrets.
func (s *Store) List() []Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Key, len(s.keys))
	for i, r := range s.keys {
		out[i] = r.Key
	}
	return out
}

// Get returns one key.
func (s *Store) Get(id string) (Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := s.indexLocked(id)
	if i < 0 {
		return Key{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.keys[i].Key, nil
}

// Revoke deletes key id; its secret stops working at once.
func (s *Store) Revoke(id string) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.indexLocked(id)
	if i < 0 {
		return Key{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	r := s.keys[i]
	next := slices.Delete(slices.Clone(s.keys), i, i+1)
	if err := s.writeLocked(next); err != nil {
		return Key{}, err
	}
	s.keys = next
	h, _ := hex.DecodeString(r.SHA256)
	delete(s.byHash, [32]byte(h))
	return r.Key, nil
}

// Valid reports whether secret is a live key's. It hashes the secret and
// looks the hash up in a map: what a timing difference could reveal is
// about the hash of the presented secret, which does not help to find a
// valid one, so no constant-time scan over the keys is needed.
func (s *Store) Valid(secret string) bool {
	if s == nil || secret == "" {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	s.mu.RLock()
	_, ok := s.byHash[h]
	s.mu.RUnlock()
	return ok
}

func (s *Store) indexLocked(id string) int {
	for i, r := range s.keys {
		if r.ID == id {
			return i
		}
	}
	return -1
}

// writeLocked replaces the file with keys: a temporary file in the same
// directory, written and synced, renamed over the old one, and the
// directory synced so that the rename survives a crash.
func (s *Store) writeLocked(keys []record) error {
	if keys == nil {
		keys = []record{}
	}
	b, err := json.MarshalIndent(file{Version: 1, Keys: keys}, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("API keys: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("API keys: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("API keys: writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("API keys: syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("API keys: writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("API keys: %w", err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("API keys: syncing %s: %w", dir, err)
		}
	}
	return nil
}
