package mountinfo

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
)

// DetachDevice lazily unmounts (MNT_DETACH) every mount in ms of the
// filesystem on device dev ("major:minor"), deepest first in case one is
// mounted inside another: the mount points are free at once, and the
// filesystem goes when its last user lets go. A mount that is already gone
// is not an error. For the cleanup of devices a dead process served.
func DetachDevice(ms []Mount, dev string) error {
	if dev == "" {
		return nil
	}
	var targets []string
	for _, m := range ms {
		if m.Dev == dev {
			targets = append(targets, m.MountPoint)
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount stale %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}
