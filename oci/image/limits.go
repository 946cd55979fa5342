package image

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// ErrTooLarge is wrapped when a layer or an image unpacks to more than the
// store's limits: the signature of a decompression bomb, or an image far
// bigger than the appliance was sized for.
var ErrTooLarge = errors.New("image too large")

// imageBudget is what all layers of one import draw from, concurrently.
type imageBudget struct {
	limit int64
	used  atomic.Int64
}

// meter accounts one layer's unpacked size against the layer limit and the
// image budget. Two measures are kept: the decompressed stream (headers,
// padding and trailing junk included) and what is written to disk (declared
// file sizes, so sparse entries count at full size, plus entryOverhead per
// entry). The larger of the two is what counts, so neither a tar that
// expands on disk nor one that is all padding gets past the limits.
type meter struct {
	layerLimit int64
	image      *imageBudget
	stream     int64
	disk       int64
	charged    int64
}

func newMeter(layerLimit int64, image *imageBudget) *meter {
	return &meter{layerLimit: layerLimit, image: image}
}

func (m *meter) addStream(n int64) error {
	m.stream += n
	return m.settle()
}

func (m *meter) addDisk(n int64) error {
	m.disk += n
	return m.settle()
}

// settle charges the image budget with any growth of the larger measure and
// checks both limits.
func (m *meter) settle() error {
	used := max(m.stream, m.disk)
	if used > m.layerLimit {
		return fmt.Errorf("%w: %w: a layer unpacks to more than the limit of %d bytes per layer", ErrHostile, ErrTooLarge, m.layerLimit)
	}
	if d := used - m.charged; d > 0 {
		m.charged = used
		if m.image.used.Add(d) > m.image.limit {
			return fmt.Errorf("%w: %w: the image unpacks to more than the limit of %d bytes per image", ErrHostile, ErrTooLarge, m.image.limit)
		}
	}
	return nil
}

// streamMeter charges the meter with every decompressed byte read.
type streamMeter struct {
	r io.Reader
	m *meter
}

func (s streamMeter) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		if merr := s.m.addStream(int64(n)); merr != nil {
			return n, merr
		}
	}
	return n, err
}
