package store

import (
	"os"
	"path/filepath"
)

// Usage is the store's size on disk in bytes: Badger's LSM tree and value
// log (as Badger last measured them; it refreshes about once a minute), and
// the payloads and streams in files.
func (s *Badger) Usage() Usage {
	lsm, vlog := s.db.Size()
	var spilled int64
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
	return Usage{Index: lsm, Log: vlog, Files: spilled}
}
