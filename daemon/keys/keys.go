// Package keys keeps emberd's API keys: the bootstrap admin key
// (DATA-DIR/api.key) and the named keys, each with a scope (admin, invoke
// or read), for invoke keys the endpoints it may use, and an expiry.
//
// Each named key has a short random ID, a name chosen by the operator, a
// scope and a creation time; only the SHA-256 of its secret is stored, so
// the secret is seen once, when the key is created. The keys live in one
// JSON file in the data directory (mode 0600), rewritten atomically (a
// temporary file, fsync, rename) on every change, so a crash leaves either
// the old set or the new one.
//
// When a key was last used is kept in memory on every request (one atomic
// store) and written to the file at most once a minute (Run) and when
// emberd stops, never once per request.
//
// The bootstrap admin key is not in the file: it stays valid whatever the
// file holds and cannot be revoked, only replaced (RotateAdmin), which
// writes a new one to its file and stops the old one at once.
package keys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emberhq/ember/daemon/auth"
)

// FileName is the store's file in the data directory.
const FileName = "keys.json"

// fileVersion is the version this package writes. Version 1 files (before
// scopes) are read as admin keys that never expire.
const fileVersion = 2

// MaxNameLen is the longest key name, in characters.
const MaxNameLen = 63

// SecretPrefix starts every secret, as it starts the bootstrap key, so that
// secret scanners and people recognise an Ember key.
const SecretPrefix = "ember_"

// MinAdminKeyLen is the shortest bootstrap admin key emberd accepts.
const MinAdminKeyLen = 32

// Bounds of a key's lifetime (Spec.ExpiresIn): under a minute is a typo
// rather than a plan, and ten years is "never" said differently.
const (
	MinExpiresIn = time.Minute
	MaxExpiresIn = 10 * 365 * 24 * time.Hour
)

// MaxEndpoints is the most endpoints one invoke key may list.
const MaxEndpoints = 64

// lastUsedEvery is how often Run writes the keys' last-use times.
const lastUsedEvery = time.Minute

var (
	// ErrNotFound is returned (wrapped) for an unknown key ID.
	ErrNotFound = errors.New("API key not found")
	// ErrExists is returned (wrapped) when a live key already has the name.
	ErrExists = errors.New("API key name already in use")
	// ErrMissing is Lookup's error for an empty secret.
	ErrMissing = errors.New("missing API key")
	// ErrWrong is Lookup's error for a secret no key has.
	ErrWrong = errors.New("wrong API key")
	// ErrNoAdminFile is RotateAdmin's error when the store has no bootstrap
	// key file to write.
	ErrNoAdminFile = errors.New("no admin key file to rotate")
)

// ExpiredError is Lookup's error for a key past its expiry. It names the
// key, never its secret.
type ExpiredError struct {
	Caller auth.Caller
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("API key %s (%s) expired at %s", e.Caller.KeyID, e.Caller.Name, e.Caller.ExpiresAt.UTC().Format(time.RFC3339))
}

// NameError says why a key name was refused.
type NameError struct{ Msg string }

func (e *NameError) Error() string { return "name: " + e.Msg }

// SpecError says why a key's scope, endpoints or expiry was refused; Field
// is the JSON field ("scope", "endpoints", "expiresIn").
type SpecError struct{ Field, Msg string }

func (e *SpecError) Error() string { return e.Field + ": " + e.Msg }

// Key is a key as listed: never its secret.
type Key struct {
	ID    string     `json:"id"`
	Name  string     `json:"name"`
	Scope auth.Scope `json:"scope"`
	// Endpoints, for an invoke key, are the endpoint ids it may use; empty
	// means every endpoint.
	Endpoints []string  `json:"endpoints,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is when the key stops working; zero for never.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// LastUsedAt is when the key last authenticated a request (to the
	// second); zero for never.
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
}

// Caller is the identity a request made with k carries.
func (k Key) Caller() auth.Caller {
	return auth.Caller{KeyID: k.ID, Name: k.Name, Scope: k.Scope, Endpoints: slices.Clone(k.Endpoints), ExpiresAt: k.ExpiresAt}
}

// Spec is what Create makes.
type Spec struct {
	Name  string
	Scope auth.Scope
	// Endpoints are endpoint ids (already resolved); only for Invoke.
	Endpoints []string
	// ExpiresIn is the key's lifetime, MinExpiresIn to MaxExpiresIn; zero
	// for never.
	ExpiresIn time.Duration
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

// entry is a live key in memory: what Lookup returns, and its last use.
type entry struct {
	key    Key
	caller auth.Caller
	hash   [32]byte // SHA-256 of the secret
	// lastUsed is the Unix second of the last use (0: never), set by
	// Lookup without any lock.
	lastUsed atomic.Int64
}

// Store holds the keys. It is safe for concurrent use.
type Store struct {
	path string
	now  func() time.Time

	// wmu serialises the file writes (changes, and Run's flushes), so a
	// flush never holds mu across an fsync and lookups never wait on disk.
	wmu sync.Mutex
	// mu guards the maps and slices below; lookups take it shared.
	mu      sync.RWMutex
	order   []string            // key ids, creation order
	byID    map[string]*entry   // id -> entry
	byHash  map[[32]byte]*entry // secret hash -> entry
	flushed map[string]int64    // id -> lastUsed as last written
	admin   [32]byte            // SHA-256 of the bootstrap key; zero: none
	adminOK bool                // admin holds a key
	adminF  string              // the bootstrap key's file, for RotateAdmin
}

// Open loads the store at path (usually DATA-DIR/keys.json); a missing file
// is an empty store, created on the first Create.
func Open(path string) (*Store, error) {
	s := &Store{path: path, now: time.Now, byID: map[string]*entry{}, byHash: map[[32]byte]*entry{}, flushed: map[string]int64{}}
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
	if f.Version != 1 && f.Version != fileVersion {
		return nil, fmt.Errorf("API keys: %s has version %d; this emberd reads versions 1 and %d", path, f.Version, fileVersion)
	}
	for _, r := range f.Keys {
		h, err := hex.DecodeString(r.SHA256)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("API keys: %s: key %q has a malformed sha256", path, r.ID)
		}
		if r.ID == "" || s.byID[r.ID] != nil {
			return nil, fmt.Errorf("API keys: %s: empty or repeated key id %q", path, r.ID)
		}
		if f.Version == 1 {
			// Before scopes every named key was as strong as the admin key.
			r.Scope, r.Endpoints, r.ExpiresAt = auth.Admin, nil, time.Time{}
		}
		if _, err := auth.ParseScope(string(r.Scope)); err != nil {
			return nil, fmt.Errorf("API keys: %s: key %q: %w", path, r.ID, err)
		}
		e := newEntry(r.Key, [32]byte(h))
		s.order = append(s.order, r.ID)
		s.byID[r.ID] = e
		s.byHash[[32]byte(h)] = e
		s.flushed[r.ID] = e.lastUsed.Load()
	}
	return s, nil
}

func newEntry(k Key, hash [32]byte) *entry {
	e := &entry{key: k, caller: k.Caller(), hash: hash}
	if !k.LastUsedAt.IsZero() {
		e.lastUsed.Store(k.LastUsedAt.Unix())
	}
	e.key.LastUsedAt = time.Time{}
	return e
}

// listed is e's key with its last use.
func (e *entry) listed() Key {
	k := e.key
	k.Endpoints = slices.Clone(k.Endpoints)
	if u := e.lastUsed.Load(); u != 0 {
		k.LastUsedAt = time.Unix(u, 0).UTC()
	}
	return k
}

// SetAdmin makes secret the bootstrap admin key, kept in file (which
// RotateAdmin rewrites; "" for none).
func (s *Store) SetAdmin(secret, file string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admin, s.adminOK, s.adminF = sha256.Sum256([]byte(secret)), secret != "", file
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

// newSecret is a fresh random secret: the prefix and 64 hex digits.
func newSecret() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("API keys: random secret: %w", err)
	}
	return SecretPrefix + hex.EncodeToString(raw[:]), nil
}

// checkSpec validates what Create is asked to make.
func checkSpec(sp Spec) error {
	if err := CheckName(sp.Name); err != nil {
		return err
	}
	if sp.Scope == "" {
		return &SpecError{"scope", "required: admin, invoke or read"}
	}
	if _, err := auth.ParseScope(string(sp.Scope)); err != nil {
		return &SpecError{"scope", fmt.Sprintf("%q: want admin, invoke or read", sp.Scope)}
	}
	if len(sp.Endpoints) > 0 && sp.Scope != auth.Invoke {
		return &SpecError{"endpoints", fmt.Sprintf("only an invoke key lists endpoints; a %s key reaches every endpoint its scope allows", sp.Scope)}
	}
	if len(sp.Endpoints) > MaxEndpoints {
		return &SpecError{"endpoints", fmt.Sprintf("%d endpoints; at most %d", len(sp.Endpoints), MaxEndpoints)}
	}
	for _, id := range sp.Endpoints {
		if id == "" {
			return &SpecError{"endpoints", "an empty endpoint id"}
		}
	}
	if sp.ExpiresIn != 0 && (sp.ExpiresIn < MinExpiresIn || sp.ExpiresIn > MaxExpiresIn) {
		return &SpecError{"expiresIn", fmt.Sprintf("%s is out of range: at least 1m, at most 3650d (10 years); leave it out for a key that never expires", sp.ExpiresIn)}
	}
	return nil
}

// Create makes the key sp describes and returns it with its secret, which
// is not kept and cannot be shown again.
func (s *Store) Create(sp Spec) (Key, string, error) {
	if err := checkSpec(sp); err != nil {
		return Key{}, "", err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	for _, id := range s.order {
		if e := s.byID[id]; e.key.Name == sp.Name {
			s.mu.RUnlock()
			return Key{}, "", fmt.Errorf("%w: %q (key %s); revoke it first or pick another name", ErrExists, sp.Name, id)
		}
	}
	s.mu.RUnlock()
	secret, err := newSecret()
	if err != nil {
		return Key{}, "", err
	}
	h := sha256.Sum256([]byte(secret))
	id := ""
	for {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Key{}, "", fmt.Errorf("API keys: random id: %w", err)
		}
		id = "k-" + hex.EncodeToString(b[:])
		s.mu.RLock()
		taken := s.byID[id] != nil
		s.mu.RUnlock()
		if !taken {
			break
		}
	}
	now := s.now().UTC().Truncate(time.Second)
	k := Key{ID: id, Name: sp.Name, Scope: sp.Scope, Endpoints: slices.Clone(sp.Endpoints), CreatedAt: now}
	if sp.ExpiresIn > 0 {
		k.ExpiresAt = now.Add(sp.ExpiresIn)
	}
	e := newEntry(k, h)
	if err := s.writeWith(func(recs []record) []record {
		return append(recs, record{Key: k, SHA256: hex.EncodeToString(h[:])})
	}); err != nil {
		return Key{}, "", err
	}
	s.mu.Lock()
	s.order = append(slices.Clip(s.order), id)
	s.byID[id] = e
	s.byHash[h] = e
	s.flushed[id] = 0
	s.mu.Unlock()
	return e.listed(), secret, nil
}

// List returns the keys, oldest first, without secrets.
func (s *Store) List() []Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Key, len(s.order))
	for i, id := range s.order {
		out[i] = s.byID[id].listed()
	}
	return out
}

// Get returns one key.
func (s *Store) Get(id string) (Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.byID[id]
	if e == nil {
		return Key{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e.listed(), nil
}

// Revoke deletes key id; its secret stops working at once.
func (s *Store) Revoke(id string) (Key, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	e := s.byID[id]
	s.mu.RUnlock()
	if e == nil {
		return Key{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err := s.writeWith(func(recs []record) []record {
		return slices.DeleteFunc(recs, func(r record) bool { return r.ID == id })
	}); err != nil {
		return Key{}, err
	}
	s.mu.Lock()
	s.order = slices.DeleteFunc(slices.Clone(s.order), func(x string) bool { return x == id })
	delete(s.byID, id)
	delete(s.flushed, id)
	delete(s.byHash, e.hash)
	s.mu.Unlock()
	return e.listed(), nil
}

// Lookup returns the caller that secret proves: the bootstrap admin key's
// (auth.BootstrapKeyID) or a named key's, and notes the key's use. Its
// errors are ErrMissing (empty secret), ErrWrong (no key has it) and
// *ExpiredError (a key past its expiry; it carries the key's caller).
//
// A named key is found by hashing the secret and looking the hash up in a
// map: what a timing difference could reveal is about the hash of the
// presented secret, which does not help to find a valid one, so no
// constant-time scan over the keys is needed. The bootstrap key's hash is
// compared in constant time anyway (one comparison, no map).
func (s *Store) Lookup(secret string) (auth.Caller, error) {
	if secret == "" {
		return auth.Caller{}, ErrMissing
	}
	if s == nil {
		return auth.Caller{}, ErrWrong
	}
	h := sha256.Sum256([]byte(secret))
	s.mu.RLock()
	if s.adminOK && subtle.ConstantTimeCompare(h[:], s.admin[:]) == 1 {
		s.mu.RUnlock()
		return AdminCaller(), nil
	}
	e := s.byHash[h]
	s.mu.RUnlock()
	if e == nil {
		return auth.Caller{}, ErrWrong
	}
	now := s.now()
	if !e.key.ExpiresAt.IsZero() && !now.Before(e.key.ExpiresAt) {
		return auth.Caller{}, &ExpiredError{Caller: e.caller}
	}
	// One store per second at most: concurrent requests with one key do
	// not keep writing the same cache line.
	if u := now.Unix(); e.lastUsed.Load() != u {
		e.lastUsed.Store(u)
	}
	c := e.caller
	c.Endpoints = slices.Clip(c.Endpoints)
	return c, nil
}

// AdminCaller is the caller of the bootstrap admin key.
func AdminCaller() auth.Caller {
	return auth.Caller{KeyID: auth.BootstrapKeyID, Name: auth.BootstrapKeyName, Scope: auth.Admin}
}

// Valid reports whether secret is a live (known, unexpired) key's.
func (s *Store) Valid(secret string) bool {
	_, err := s.Lookup(secret)
	return err == nil
}

// RotateAdmin replaces the bootstrap admin key: a new random key is written
// to its file (a temporary file, mode 0600, fsync, rename, directory fsync)
// and then replaces the old one in memory, so the old one stops working at
// once and the file survives a crash whole. It returns the new secret and
// the file.
func (s *Store) RotateAdmin() (secret, file string, err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	file = s.adminF
	s.mu.RUnlock()
	if file == "" {
		return "", "", ErrNoAdminFile
	}
	secret, err = newSecret()
	if err != nil {
		return "", "", err
	}
	if err := WriteFileAtomic(file, []byte(secret+"\n")); err != nil {
		return "", "", fmt.Errorf("rotate admin key: %w", err)
	}
	s.mu.Lock()
	s.admin, s.adminOK = sha256.Sum256([]byte(secret)), true
	s.mu.Unlock()
	return secret, file, nil
}

// Run writes the keys' last-use times to the file once a minute when they
// changed, until ctx ends, then once more. Errors are passed to report
// (nil: dropped); the times are only a hint, and the next flush retries.
func (s *Store) Run(ctx context.Context, report func(error)) {
	t := time.NewTicker(lastUsedEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.Flush(); err != nil && report != nil {
				report(err)
			}
			return
		case <-t.C:
			if err := s.Flush(); err != nil && report != nil {
				report(err)
			}
		}
	}
}

// Flush writes the keys' last-use times to the file if any changed since
// the last write.
func (s *Store) Flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	dirty := false
	for id, e := range s.byID {
		if e.lastUsed.Load() != s.flushed[id] {
			dirty = true
			break
		}
	}
	s.mu.RUnlock()
	if !dirty {
		return nil
	}
	return s.writeWith(func(recs []record) []record { return recs })
}

// writeWith writes the file: the current records (with their last use),
// changed by edit. The caller holds wmu; mu is taken only to snapshot.
func (s *Store) writeWith(edit func([]record) []record) error {
	s.mu.RLock()
	recs := make([]record, 0, len(s.order)+1)
	used := make(map[string]int64, len(s.order))
	for _, id := range s.order {
		e := s.byID[id]
		k := e.listed()
		used[id] = e.lastUsed.Load()
		recs = append(recs, record{Key: k, SHA256: hex.EncodeToString(e.hash[:])})
	}
	s.mu.RUnlock()
	recs = edit(recs)
	if recs == nil {
		recs = []record{}
	}
	b, err := json.MarshalIndent(file{Version: fileVersion, Keys: recs}, "", "  ")
	if err != nil {
		return fmt.Errorf("API keys: %w", err)
	}
	if err := WriteFileAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("API keys: %w", err)
	}
	s.mu.Lock()
	for id, u := range used {
		if _, ok := s.flushed[id]; ok {
			s.flushed[id] = u
		}
	}
	s.mu.Unlock()
	return nil
}

// WriteFileAtomic replaces path with b, mode 0600: a temporary file in the
// same directory, written and synced, renamed over the old one, and the
// directory synced so that the rename survives a crash. A crash leaves the
// old content or the new, never a mix.
func WriteFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", dir, err)
		}
	}
	return nil
}
