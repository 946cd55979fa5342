package runc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts the overlay of a worker at p.rootfs: lowerdir the
// layers (top first), upperdir p.upper, workdir p.work.
//
// The mount options must fit in one page (the kernel copies at most
// PAGE_SIZE bytes of mount data; lowerdir is silently cut beyond). When
// the absolute paths do not fit, the layers are reached through short
// symlinks p.links/0, 1, ... and the mount is made with paths relative to
// p.dir, from a goroutine locked to a thread that has its own working
// directory (unshare(CLONE_FS)), so the rest of the process is not
// affected: about 6 bytes per layer, room for overlayfs's 500 layers.
func mountOverlay(layers []string, p paths) error {
	if len(layers) == 0 {
		return errors.New("overlay: the image has no layers")
	}
	for _, l := range append([]string{p.upper, p.work}, layers...) {
		if !filepath.IsAbs(l) {
			return fmt.Errorf("overlay: %q is not an absolute path", l)
		}
		if strings.ContainsAny(l, ",:\\") {
			return fmt.Errorf("overlay: path %q holds one of ',', ':' or '\\'", l)
		}
	}
	data := "lowerdir=" + strings.Join(layers, ":") + ",upperdir=" + p.upper + ",workdir=" + p.work
	if len(data) < os.Getpagesize() {
		if err := unix.Mount("overlay", p.rootfs, "overlay", 0, data); err != nil {
			return fmt.Errorf("overlay: mount %d layer(s) at %s: %w", len(layers), p.rootfs, err)
		}
		return nil
	}

	if err := os.Mkdir(p.links, 0o700); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	rel := make([]string, len(layers))
	for i, l := range layers {
		name := strconv.Itoa(i)
		if err := os.Symlink(l, filepath.Join(p.links, name)); err != nil {
			return fmt.Errorf("overlay: %w", err)
		}
		rel[i] = filepath.Base(p.links) + "/" + name
	}
	data = "lowerdir=" + strings.Join(rel, ":") + ",upperdir=" + filepath.Base(p.upper) + ",workdir=" + filepath.Base(p.work)
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("overlay: %d layers do not fit in the mount options", len(layers))
	}
	errc := make(chan error, 1)
	go func() {
		// The thread's fs context is changed below, so it must never run
		// other goroutines: without UnlockOSThread, the runtime ends the
		// thread when this goroutine returns.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Chdir(p.dir); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("overlay", p.rootfs, "overlay", 0, data)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("overlay: mount %d layer(s) at %s: %w", len(layers), p.rootfs, err)
	}
	return nil
}

// unmount unmounts target; not being mounted is not an error. A busy mount
// is retried briefly, then detached (it goes once its last user does).
func unmount(target string) error {
	for i := 0; ; i++ {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			// Overlays may be stacked by a crashed run: unmount them all.
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not (or no longer) a mount point
		case errors.Is(err, unix.EBUSY) && i < 10:
			time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
}

// cleanupFiles unmounts a worker's overlay and removes what the runtime
// made in its Dir (the Dir itself is the caller's). Nothing is removed
// while the overlay is still mounted.
func cleanupFiles(p paths) error {
	if err := unmount(p.rootfs); err != nil {
		return err
	}
	return removeWorkerFiles(p)
}

func removeWorkerFiles(p paths) error {
	var errs []error
	// rootfs is an empty mount point by now: Remove, never RemoveAll.
	if err := os.Remove(p.rootfs); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, path := range []string{p.upper, p.work, p.links, p.etc, p.config} {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
