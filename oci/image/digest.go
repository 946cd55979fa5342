package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"regexp"
)

// digestRE is the only digest form the store accepts. Digests become file
// names (blobs/sha256/<hex>), so anything looser would be a path traversal.
var digestRE = regexp.MustCompile(`^sha256:([a-f0-9]{64})$`)

// parseDigest checks that d is "sha256:" and 64 lowercase hex digits and
// returns the hex part.
func parseDigest(d string) (string, error) {
	m := digestRE.FindStringSubmatch(d)
	if m == nil {
		if len(d) > 80 {
			d = d[:80] + "..."
		}
		return "", fmt.Errorf("invalid digest %q: only sha256:<64 hex digits> is supported", d)
	}
	return m[1], nil
}

// digestOf returns the sha256 digest of b in "sha256:<hex>" form.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// hashSum formats h's sum as a digest.
func hashSum(h hash.Hash) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// countingReader counts what passes through it and reports it to onRead, so
// that progress follows the bytes actually read from the archive.
type countingReader struct {
	r      io.Reader
	n      int64
	onRead func(n int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 && c.onRead != nil {
		c.onRead(int64(n))
	}
	return n, err
}

// ctxReader fails reads once ctx is done, so that a cancelled import stops
// within one buffer instead of at the end of a many-gigabyte layer.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
