package runc

import (
	"fmt"

	"github.com/emberhq/ember/oci"
)

// StaticImages is an oci.Images of fixed root filesystems, by reference:
// for benchmarks and tests that have no image store.
type StaticImages map[string]oci.RootFS

// Resolve implements oci.Images.
func (im StaticImages) Resolve(ref string) (oci.RootFS, error) {
	r, ok := im[ref]
	if !ok {
		return oci.RootFS{}, fmt.Errorf("no image %q", ref)
	}
	return r, nil
}
