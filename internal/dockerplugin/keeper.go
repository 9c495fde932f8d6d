package dockerplugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// A keeper holds, for a volume in use, a copy of its mount that outlives the
// node process, so that a node restart does not leave running containers on
// a dead filesystem.
//
// A container's /data is a slave copy of the mount at the volume's target:
// the mount root is shared, and runc makes the container's mounts slaves of
// the host's. When the node stops, its FUSE server dies, the node unmounts
// the target and, on its next start, lazily unmounts every mount of the dead
// loop device in its namespace. The keeper is a peer of the first mount (same
// peer group as the container's master) held in a mount namespace of its own,
// which the node cannot see and which holds nothing else (so it keeps no
// other filesystem busy). It persists through a bind mount of its namespace
// file under MountRoot/.keep. After the restart the volume is mounted again
// at the target and a clone of that mount is stacked on the keeper's: the new
// mount propagates to every slave of the keeper's group, so running
// containers see the volume again at /data (on top of the dead mount, which
// only the files they held open still point to).

// keepDir is the private directory that holds the keepers' namespace files.
func (p *Plugin) keepDir() string { return filepath.Join(p.opts.MountRoot, ".keep") }

func (p *Plugin) keeperFile(name string) string { return filepath.Join(p.keepDir(), name) }

// setupKeepers makes the keep directory a private mount point: namespace
// files can be bound only there.
func (p *Plugin) setupKeepers() error {
	dir := p.keepDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !kernelMountedAt(dir) {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// holdMount makes a keeper for the mount at target: a new mount namespace
// with a tmpfs root and a peer copy of the mount at /m, persisted at nsFile.
func holdMount(target, nsFile string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, target, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone the mount at %s: %w", target, err)
	}
	defer unix.Close(tree)
	f, err := os.OpenFile(nsFile, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()

	scratch := filepath.Dir(nsFile) // hidden by the keeper's tmpfs, in its namespace only
	type ready struct {
		tid int
		err error
	}
	readyc := make(chan ready, 1)
	release := make(chan struct{})
	done := make(chan struct{})
	go onFreshThread(func() {
		defer close(done)
		err := func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			// Nothing done here may propagate back to the host.
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
				return fmt.Errorf("make / slave: %w", err)
			}
			if err := unix.Mount("strata-keeper", scratch, "tmpfs", 0, "size=16k,mode=0700"); err != nil {
				return fmt.Errorf("keeper root: %w", err)
			}
			for _, d := range []string{"m", "old"} {
				if err := os.Mkdir(filepath.Join(scratch, d), 0o700); err != nil {
					return err
				}
			}
			if err := unix.MoveMount(tree, "", unix.AT_FDCWD, filepath.Join(scratch, "m"), unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach the clone: %w", err)
			}
			if err := unix.PivotRoot(scratch, filepath.Join(scratch, "old")); err != nil {
				return fmt.Errorf("pivot_root: %w", err)
			}
			if err := unix.Chdir("/"); err != nil {
				return err
			}
			// Drop the copies of every other mount: the keeper must keep
			// nothing else busy. They are slaves: the host keeps its own.
			if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
				return fmt.Errorf("drop the host's mounts: %w", err)
			}
			return nil
		}()
		readyc <- ready{unix.Gettid(), err}
		if err == nil {
			<-release
		}
	})
	r := <-readyc
	if r.err == nil {
		// From a thread of the host namespace (this goroutine's).
		src := fmt.Sprintf("/proc/%d/task/%d/ns/mnt", os.Getpid(), r.tid)
		if err := unix.Mount(src, nsFile, "", unix.MS_BIND, ""); err != nil {
			r.err = fmt.Errorf("persist the keeper namespace: %w", err)
		}
		close(release)
	}
	<-done
	if r.err != nil {
		os.Remove(nsFile)
		return fmt.Errorf("keeper for %s: %w", target, r.err)
	}
	return nil
}

// stackMount clones the mount at target on top of the keeper's mount.
func stackMount(target, nsFile string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, target, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone the mount at %s: %w", target, err)
	}
	defer unix.Close(tree)
	ns, err := unix.Open(nsFile, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	errc := make(chan error, 1)
	go onFreshThread(func() {
		errc <- func() error {
			// setns into a mount namespace needs a private fs_struct.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare fs: %w", err)
			}
			if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("enter the keeper: %w", err)
			}
			if err := unix.MoveMount(tree, "", unix.AT_FDCWD, "/m", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("stack the new mount: %w", err)
			}
			return nil
		}()
	})
	if err := <-errc; err != nil {
		return fmt.Errorf("keeper for %s: %w", target, err)
	}
	return nil
}

// releaseMount drops a keeper: its namespace, and the mounts in it, go away
// with the last reference to it.
func releaseMount(nsFile string) error {
	err := unix.Unmount(nsFile, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("release keeper %s: %w", nsFile, err)
	}
	os.Remove(nsFile)
	return nil
}

// onFreshThread runs fn on an OS thread of its own that is thrown away
// afterwards, so that fn may change the thread's mount namespace. It never
// runs fn on the main thread: that one cannot exit (Go would keep it, in the
// changed namespace, and /proc/self would then show that namespace to the
// whole process).
func onFreshThread(fn func()) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// Hold the main thread while another goroutine, which therefore
		// cannot land on it, does the work.
		done := make(chan struct{})
		go onFreshThread(func() { defer close(done); fn() })
		<-done
		runtime.UnlockOSThread()
		return
	}
	fn()
	// Not unlocked: the thread exits with this goroutine.
}
