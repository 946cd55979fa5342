package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The -rootfs, -exclude, -add and -entrypoint flags.
var (
	rootfs     string
	excludes   listFlag
	adds       listFlag
	entrypoint string
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// entrypointWords is the image's entrypoint: -entrypoint split on spaces,
// or /worker.
func entrypointWords() []string {
	if w := strings.Fields(entrypoint); len(w) > 0 {
		return w
	}
	return []string{"/worker"}
}

// emptied are the directories of a root file system packed without their
// contents: the runtime mounts its own /dev, /proc and /sys.
var emptied = []string{"dev", "proc", "sys"}

// tarTree writes the tree under dir into tw, names relative to dir, owners
// and modes as they are, hard links as links to the first name seen.
// Device nodes, sockets and fifos are left out (an image carries none, and
// Ember's import refuses device nodes), as are the paths in exclude
// (relative to dir) with everything under them. A runpod-volume/ mount
// point is added when the tree has none.
func tarTree(tw *tar.Writer, dir string, exclude []string) error {
	for i, e := range exclude {
		exclude[i] = strings.Trim(filepath.Clean(e), "/")
	}
	links := make(map[[2]uint64]string)
	hasVolume := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		if slices.Contains(exclude, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if slices.Contains(emptied, filepath.Dir(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		if !mode.IsRegular() && !mode.IsDir() && mode&fs.ModeSymlink == 0 {
			return nil
		}
		var target string
		if mode&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		hdr.Name = rel
		hdr.Uname, hdr.Gname = "", ""
		if mode.IsDir() {
			hdr.Name += "/"
			if rel == "runpod-volume" {
				hasVolume = true
			}
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		if st != nil && mode.IsRegular() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			links[key] = rel
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !mode.IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("packing %s: %w", dir, err)
	}
	if !hasVolume {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "runpod-volume/", Mode: 0o755})
	}
	return nil
}
