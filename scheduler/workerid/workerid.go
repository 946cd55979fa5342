// Package workerid is the one home of the worker id's format: "w-" and
// lowercase hex. The scheduler makes them (New); the HTTP API checks the
// ids it is given (Valid) before using one in a file name under the
// workers' log directory; the log sweeper tells workers' logs by their
// Prefix.
//
// It imports nothing of Ember, so that every layer may import it.
package workerid

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// Prefix starts every worker id.
const Prefix = "w-"

// maxLen bounds what Valid accepts: the prefix and 64 hex digits, room
// beyond the 12 that New makes.
const maxLen = len(Prefix) + 64

// New returns a fresh worker id: Prefix and 12 random hex digits.
func New() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return Prefix + hex.EncodeToString(b[:])
}

// Valid reports whether id has the worker id's form (Prefix, then one to
// 64 lowercase hex digits), so that it can never name a file outside the
// workers' log directory.
func Valid(id string) bool {
	if len(id) <= len(Prefix) || len(id) > maxLen || id[:len(Prefix)] != Prefix {
		return false
	}
	for _, c := range id[len(Prefix):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
