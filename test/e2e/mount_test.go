package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountSnapshotCloneMount mounts a volume through FUSE and a loop device,
// writes files, unmounts, snapshots, clones, and mounts the clone elsewhere.
func TestMountSnapshotCloneMount(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mkfs.xfs")
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			n := newNode(t)
			n.run("volume", "create", "web", "--size", "512MiB")
			dir := filepath.Join(t.TempDir(), "web")
			n.run("volume", "mount", "web", dir, "--fs", fs)
			payload := bytes.Repeat([]byte("strata "+fs+"\n"), 100000)
			if err := os.WriteFile(filepath.Join(dir, "data.txt"), payload, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "sub", "small"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			// A mounted volume can be neither deleted nor reverted.
			if e := n.fail("volume", "delete", "web"); !strings.Contains(e, "mount") {
				t.Errorf("delete of a mounted volume: %q", e)
			}
			n.run("volume", "unmount", dir)
			if isMountpoint(t, dir) {
				t.Fatalf("%s is still a mountpoint after unmount", dir)
			}
			n.run("snapshot", "create", "web", "--name", "v1")
			n.run("volume", "clone", "web@v1", "web-dev")

			// Mount both at once: the clone carries the parent's files.
			n.run("volume", "mount", "web", dir)
			devDir := filepath.Join(t.TempDir(), "web-dev")
			n.run("volume", "mount", "web-dev", devDir)
			for _, d := range []string{dir, devDir} {
				got, err := os.ReadFile(filepath.Join(d, "data.txt"))
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("%s/data.txt: %v (len %d)", d, err, len(got))
				}
				if got, _ := os.ReadFile(filepath.Join(d, "sub", "small")); string(got) != "hello" {
					t.Fatalf("%s/sub/small = %q", d, got)
				}
			}
			// Writes to the clone stay in the clone.
			if err := os.WriteFile(filepath.Join(devDir, "only-in-clone"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			syncFS(t, devDir)
			if _, err := os.Stat(filepath.Join(dir, "only-in-clone")); !os.IsNotExist(err) {
				t.Fatalf("clone's file visible in the parent: %v", err)
			}
			if e := n.fail("volume", "revert", "web", "--to", "v1"); !strings.Contains(e, "mount") {
				t.Errorf("revert of a mounted volume: %q", e)
			}
			n.run("volume", "unmount", devDir)
			n.run("volume", "unmount", dir)
			if e := n.fail("volume", "unmount", dir); !strings.Contains(strings.ToLower(e), "not") {
				t.Errorf("second unmount: %q", e)
			}
			// Mounted again after a restart, the clone still has its own file.
			n.stop()
			n.start()
			n.run("volume", "mount", "web-dev", devDir)
			if _, err := os.Stat(filepath.Join(devDir, "only-in-clone")); err != nil {
				t.Fatalf("clone's file lost across restart: %v", err)
			}
			n.run("volume", "unmount", devDir)
		})
	}
}

func syncFS(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("sync", "-f", dir).CombinedOutput(); err != nil {
		t.Fatalf("sync -f %s: %v %s", dir, err, out)
	}
}

func isMountpoint(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// TestExportedVolumeRefusesDeleteAndRevert holds an NBD connection open and
// checks that delete and revert are refused until it closes.
func TestExportedVolumeRefusesDeleteAndRevert(t *testing.T) {
	n := newNode(t)
	n.run("volume", "create", "busy", "--size", "16MiB")
	n.run("snapshot", "create", "busy", "--name", "s")
	conn := nbdConnect(t, n.nbd, "busy")
	for _, args := range [][]string{{"volume", "delete", "busy"}, {"volume", "revert", "busy", "--to", "s"}} {
		if e := n.fail(args...); !strings.Contains(strings.ToLower(e), "export") && !strings.Contains(strings.ToLower(e), "connect") {
			t.Errorf("strata %s while connected: %q", strings.Join(args, " "), e)
		}
	}
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := n.try("volume", "revert", "busy", "--to", "s"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revert still refused 10s after the NBD client disconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.run("volume", "delete", "busy")
}

// nbdConnect performs a fixed-newstyle handshake with NBD_OPT_EXPORT_NAME and
// returns the connection in transmission phase.
func nbdConnect(t *testing.T, addr, export string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 18) // NBDMAGIC, IHAVEOPT, handshake flags
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	if string(hdr[:8]) != "NBDMAGIC" {
		t.Fatalf("bad NBD greeting %q", hdr[:8])
	}
	const fixedNewstyle, noZeroes = 1, 2
	binary.Write(c, binary.BigEndian, uint32(fixedNewstyle|noZeroes))
	opt := make([]byte, 16)
	copy(opt, "IHAVEOPT")
	binary.BigEndian.PutUint32(opt[8:], 1) // NBD_OPT_EXPORT_NAME
	binary.BigEndian.PutUint32(opt[12:], uint32(len(export)))
	c.Write(append(opt, export...))
	reply := make([]byte, 10) // size + transmission flags (no zeroes)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatalf("export %q refused: %v", export, err)
	}
	c.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestResizeMounted grows a mounted xfs volume: the filesystem grows online
// and keeps its files.
func TestResizeMounted(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.xfs", "xfs_growfs")
	n := newNode(t)
	n.run("volume", "create", "grow", "--size", "320MiB")
	dir := filepath.Join(t.TempDir(), "grow")
	n.run("volume", "mount", "grow", dir, "--fs", "xfs")
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := fsSize(t, dir)
	n.run("volume", "resize", "grow", "--size", "1GiB")
	if after := fsSize(t, dir); after < before*3 {
		t.Fatalf("filesystem is %d bytes after growing the volume from 320MiB to 1GiB (was %d)", after, before)
	}
	big := bytes.Repeat([]byte{7}, 400<<20) // more than the old filesystem held
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatalf("write past the old size: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "keep")); string(got) != "kept" {
		t.Fatalf("file lost across the resize: %q", got)
	}
	if out := n.run("volume", "inspect", "grow"); !strings.Contains(out, "1GiB") {
		t.Fatalf("inspect after resize:\n%s", out)
	}
	n.run("volume", "unmount", dir)
}

func fsSize(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

// TestResizeMountedExt4 grows a mounted ext4 volume. Where the node lacks
// CAP_SYS_RESOURCE (ext4's online resize needs it) the call fails and says
// so, but the volume's new size stands, in the API as in the chain.
func TestResizeMountedExt4(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "resize2fs")
	n := newNode(t)
	n.run("volume", "create", "grow4", "--size", "64MiB")
	dir := filepath.Join(t.TempDir(), "grow4")
	n.run("volume", "mount", "grow4", dir, "--fs", "ext4")
	before := fsSize(t, dir)
	_, errOut, err := n.try("volume", "resize", "grow4", "--size", "256MiB")
	if err != nil {
		if !strings.Contains(errOut, "CAP_SYS_RESOURCE") {
			t.Fatalf("resize of a mounted ext4 volume: %v: %s", err, errOut)
		}
	} else if after := fsSize(t, dir); after < before*3 {
		t.Fatalf("filesystem is %d bytes after growing the volume 4x (was %d)", after, before)
	}
	if out := n.run("volume", "inspect", "grow4"); !strings.Contains(out, "256MiB") {
		t.Fatalf("the volume's new size was not kept:\n%s", out)
	}
	n.run("volume", "unmount", dir)
}
