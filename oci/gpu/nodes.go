package gpu

import (
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// hostNode is what a container's copy of a host device node needs: runc
// creates the node inside the container from these numbers (it does not
// bind the host's node), so they must be read from the host, not assumed.
// nvidia-uvm in particular gets a dynamic major at module load.
type hostNode struct {
	major, minor int64
	// perm holds the permission bits only, as runc's mknod wants them.
	perm     os.FileMode
	uid, gid uint32
}

// statNode reads a host character device. It follows symlinks, because
// some hosts make /dev/nvidia* links into /dev/char or a udev directory.
// A missing node yields an error that matches fs.ErrNotExist.
func statNode(path string) (hostNode, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return hostNode{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return hostNode{}, fmt.Errorf("%s is not a character device (mode %#o)", path, st.Mode)
	}
	rdev := uint64(st.Rdev) //nolint:unconvert // Rdev is uint32 on some architectures.
	return hostNode{
		major: int64(unix.Major(rdev)),
		minor: int64(unix.Minor(rdev)),
		perm:  os.FileMode(st.Mode & 0o777),
		uid:   st.Uid,
		gid:   st.Gid,
	}, nil
}
