package fusefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loopDevice is a loop device attached by us. We keep it open for as long as
// it is in use: the open descriptor pins the device number to our backing
// file (no one else can be handed the same loop device in between), and its
// close is what detaches the device (LO_FLAGS_AUTOCLEAR) once the filesystem
// above is unmounted, also when the daemon dies.
type loopDevice struct {
	path     string // /dev/loopN
	number   int
	fd       int // -1 once closed
	directIO bool
}

// attachLoop attaches a free loop device to the file at backing, with
// LO_FLAGS_AUTOCLEAR, and with LO_FLAGS_DIRECT_IO when the kernel accepts it
// on that file.
func attachLoop(backing string, readOnly bool) (*loopDevice, error) {
	mode := unix.O_RDWR
	if readOnly {
		mode = unix.O_RDONLY
	}
	bfd, err := unix.Open(backing, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", backing, err)
	}
	defer unix.Close(bfd)

	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/loop-control: %w", err)
	}
	defer unix.Close(ctl)

	flags := uint32(unix.LO_FLAGS_AUTOCLEAR)
	if readOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	var lastErr error
	// Another process may take the free device between GET_FREE and
	// CONFIGURE (EBUSY): ask again.
	for try := 0; try < 16; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		fd, err := openLoopNode(path)
		if err != nil {
			return nil, err
		}
		dio, err := configureLoop(fd, bfd, backing, flags)
		if err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EBUSY) {
				lastErr = err
				continue
			}
			return nil, fmt.Errorf("attach %s to %s: %w", path, backing, err)
		}
		return &loopDevice{path: path, number: n, fd: fd, directIO: dio}, nil
	}
	return nil, fmt.Errorf("attach a loop device to %s: %w", backing, lastErr)
}

// openLoopNode opens /dev/loopN; devtmpfs creates the node when the device
// is added, which may lag GET_FREE by a moment.
func openLoopNode(path string) (int, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) || time.Now().After(deadline) {
			return -1, fmt.Errorf("open %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// configureLoop binds the loop device fd to the backing file, with direct
// I/O when the kernel accepts it. It reports whether direct I/O is on.
func configureLoop(fd, bfd int, backing string, flags uint32) (bool, error) {
	cfg := unix.LoopConfig{Fd: uint32(bfd)}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], backing)
	cfg.Info.Flags = flags | unix.LO_FLAGS_DIRECT_IO
	err := unix.IoctlLoopConfigure(fd, &cfg)
	if errors.Is(err, unix.EINVAL) {
		// Direct I/O refused on this backing file: go buffered.
		cfg.Info.Flags = flags
		err = unix.IoctlLoopConfigure(fd, &cfg)
	}
	if errors.Is(err, unix.ENOTTY) {
		// Kernel older than 5.8: no LOOP_CONFIGURE.
		if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, bfd); err != nil {
			return false, err
		}
		info := cfg.Info
		info.Flags = flags
		if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
			unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
			return false, err
		}
		// Best effort: buffered I/O works too.
		unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1)
		err = nil
	}
	if err != nil {
		return false, err
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return false, nil
	}
	return info.Flags&unix.LO_FLAGS_DIRECT_IO != 0, nil
}

// detach asks the kernel to detach the device and closes our descriptor.
// When no one else has the device open, our close detaches it at once;
// otherwise the last close does.
func (l *loopDevice) detach() {
	if l.fd < 0 {
		return
	}
	// ENXIO: already detached.
	unix.IoctlSetInt(l.fd, unix.LOOP_CLR_FD, 0)
	unix.Close(l.fd)
	l.fd = -1
}

// loopBackingFile returns the backing file of loop device number n, or ""
// when it has none.
func loopBackingFile(n int) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", n))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// loopsBackedBy returns the numbers of the loop devices whose backing file is
// path.
func loopsBackedBy(path string) []int {
	dirs, _ := filepath.Glob("/sys/block/loop*")
	var out []int
	for _, d := range dirs {
		var n int
		if _, err := fmt.Sscanf(filepath.Base(d), "loop%d", &n); err != nil {
			continue
		}
		if loopBackingFile(n) == path {
			out = append(out, n)
		}
	}
	return out
}

// loopDevNumber returns "major:minor" of loop device n, as mountinfo shows it.
func loopDevNumber(n int) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/dev", n))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
