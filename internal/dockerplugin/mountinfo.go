package dockerplugin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/mountinfo"
)

// kernelMountedAt reports whether something is mounted at dir in this
// process's mount namespace, from /proc/self/mountinfo.
func kernelMountedAt(dir string) bool {
	dir = filepath.Clean(dir)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && mountinfo.Unescape(f[4]) == dir {
			return true
		}
	}
	return false
}

// detach lazily unmounts whatever is mounted at dir (a filesystem whose FUSE
// server died with the node): the mount disappears from the host now and its
// last user releases it.
func detach(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// syncFS writes back the filesystem mounted at dir (syncfs(2)).
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// shareMountRoot makes dir a mount point with shared propagation (a bind
// mount of itself when it is not a mount point yet), so that the volumes
// mounted under it are shared: containers' copies of them are slaves that
// follow the keepers (keeper.go).
func shareMountRoot(dir string) error {
	if !kernelMountedAt(dir) {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}
