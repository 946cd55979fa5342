package store

import (
	"os"
	"path/filepath"
)

// Size is the store's size on disk in bytes: Badger's LSM tree and value
// log (as Badger last measured them; it refreshes about once a minute), and
// the payloads spilled to files.
func (s *Store) Size() (lsm, vlog, spilled int64) {
	lsm, vlog = s.db.Size()
	if s.spillDir != "" {
		filepath.WalkDir(s.spillDir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					spilled += info.Size()
				}
			}
			return nil
		})
	}
	return lsm, vlog, spilled
}
