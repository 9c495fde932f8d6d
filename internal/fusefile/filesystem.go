package fusefile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/mountinfo"
)

// headerSize is how much of the device must read as zeroes before we format
// it: every filesystem and partition table keeps its superblock or header in
// the first MiB.
const headerSize = 1 << 20

// tool finds an administration program; daemons often run with a PATH
// without the sbin directories.
func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin: %w", name, errdefs.ErrFailedPrecondition)
}

// run runs a program and returns its error with its output.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	p, err := tool(name)
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, p, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, firstLines(out, 2))
	}
	return out, nil
}

// firstLines returns the first n lines of a program's output: the message,
// without the usage text some tools print after it.
func firstLines(out []byte, n int) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if len(keep) == n || strings.HasPrefix(l, "Usage:") {
			break
		}
		keep = append(keep, strings.TrimSpace(l))
	}
	return strings.Join(keep, "; ")
}

// probe returns the filesystem type on the block device ("" when blkid finds
// none) and whatever else blkid found (a partition table, RAID member...).
func probe(ctx context.Context, blockDev string) (fsType, other string, err error) {
	p, err := tool("blkid")
	if err != nil {
		return "", "", err
	}
	out, err := exec.CommandContext(ctx, p, "-p", "-o", "export", blockDev).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		return "", "", nil // nothing found
	}
	if err != nil {
		return "", "", fmt.Errorf("blkid -p %s: %w", blockDev, err)
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vals[k] = v
		}
	}
	switch {
	case vals["TYPE"] != "" && vals["USAGE"] != "raid" && vals["USAGE"] != "crypto" && vals["USAGE"] != "other":
		return vals["TYPE"], "", nil
	case vals["TYPE"] != "":
		return "", vals["TYPE"], nil
	case vals["PTTYPE"] != "":
		return "", "partition table " + vals["PTTYPE"], nil
	default:
		return "", "unrecognized signature", nil
	}
}

// headerIsZero reports whether the first MiB of dev reads as zeroes: blkid
// finding nothing is not proof that a device is unused.
func headerIsZero(dev Device) (bool, error) {
	n := min(dev.Size(), headerSize)
	buf := make([]byte, n)
	got, err := dev.ReadAt(buf, 0)
	if err != nil && int64(got) != n {
		return false, fmt.Errorf("read device header: %w", err)
	}
	for _, b := range buf {
		if b != 0 {
			return false, nil
		}
	}
	return true, nil
}

// mkfs makes a filesystem of type fsType on blockDev without discarding (a
// new volume already reads as zeroes, and discard would walk all of it).
func mkfs(ctx context.Context, fsType, blockDev string) error {
	var err error
	switch fsType {
	case "ext4":
		_, err = run(ctx, "mkfs.ext4", "-F", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", blockDev)
	case "xfs":
		// No -f: mkfs.xfs refuses a device with a filesystem on it, one
		// more guard against formatting data.
		_, err = run(ctx, "mkfs.xfs", "-q", "-K", blockDev)
	default:
		err = fmt.Errorf("filesystem %q: %w", fsType, errdefs.ErrInvalidArgument)
	}
	return err
}

// mountArgs returns the kernel filesystem type and options for a filesystem
// blkid found: ext2 and ext3 are mounted by the ext4 driver; xfs with nouuid
// so that clones of one filesystem (same UUID) can be mounted at once.
func mountArgs(found string) (kernelType, data string, err error) {
	switch found {
	case "ext4", "ext3", "ext2":
		return "ext4", "errors=remount-ro", nil
	case "xfs":
		return "xfs", "nouuid", nil
	default:
		return "", "", fmt.Errorf("device holds a %s filesystem; only ext4 and xfs are mounted: %w", found, errdefs.ErrFailedPrecondition)
	}
}

// mounts reads /proc/self/mountinfo.
func mounts() ([]mountinfo.Mount, error) { return mountinfo.Read() }

// isMountPoint reports whether path is a mount point.
func isMountPoint(path string) (bool, error) {
	ms, err := mounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.MountPoint == path {
			return true, nil
		}
	}
	return false, nil
}
