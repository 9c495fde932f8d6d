package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerPluginFromUp starts `strata up --docker-plugin` and uses the
// volume through the docker CLI and the real engine: the wiring of the
// plugin into the node (the plugin itself is tested in internal/dockerplugin).
func TestDockerPluginFromUp(t *testing.T) {
	needRoot(t)
	needTools(t, "docker")
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed)")
	}
	driver := fmt.Sprintf("strata-e2e-%d", os.Getpid())
	sock := filepath.Join("/run/docker/plugins", driver+".sock")
	dir := t.TempDir()
	// The plugin keeps its mount root (and the keepers' directory) mounted
	// across node restarts on purpose; the test removes them at the end.
	t.Cleanup(func() { unmountUnder(t, dir) })
	n := newNodeAt(t, dir, filepath.Join(dir, "data"), "--docker-plugin", "--docker-plugin-socket", sock)
	image := busyboxImage(t)
	vol := "e2e-docker"
	t.Cleanup(func() {
		// Only reached with the node up after a failure: a dead driver makes
		// docker retry for a long while, so bound it.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		exec.CommandContext(ctx, "docker", "volume", "rm", "-f", vol).Run()
	})

	dockerOK(t, "volume", "create", "-d", driver, vol, "-o", "size=256MiB", "-o", "fs=ext4")
	dockerOK(t, "run", "--rm", "-v", vol+":/data", image, "sh", "-c", "echo from-docker > /data/f && sync")
	if out := dockerOK(t, "run", "--rm", "-v", vol+":/data", image, "cat", "/data/f"); strings.TrimSpace(out) != "from-docker" {
		t.Fatalf("second container reads %q", out)
	}
	if out := n.run("volume", "inspect", vol); !strings.Contains(out, "256MiB") {
		t.Fatalf("strata does not show the docker volume:\n%s", out)
	}
	if out, err := exec.Command("docker", "volume", "create", "-d", driver, "bad", "-o", "colour=red").CombinedOutput(); err == nil || !strings.Contains(string(out), "colour") {
		t.Fatalf("unknown option accepted: %v %s", err, out)
	}
	dockerOK(t, "volume", "rm", vol)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(n.fail("volume", "inspect", vol), "not found") {
		if time.Now().After(deadline) {
			t.Fatal("volume still exists after docker volume rm")
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("plugin socket %s left after the node stopped: %v", sock, err)
	}
}

// unmountUnder lazily unmounts every mount below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var below []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			below = append(below, f[4])
		}
	}
	for i := len(below) - 1; i >= 0; i-- {
		exec.Command("umount", "-l", below[i]).Run()
	}
}

func dockerOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// busyboxImage imports a one-binary image from Debian's busybox-static: the
// engine has no registry to pull from.
func busyboxImage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("/bin/busybox: %v (install Debian's busybox-static; make test does)", err)
	}
	return importImage(t, fmt.Sprintf("strata-e2e-busybox:%d", os.Getpid()), func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
		tw.Write(data)
		for _, a := range []string{"sh", "cat", "echo", "sync"} {
			tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
		}
	})
}

// importImage imports an image (docker import: the engine has no registry
// to pull from) from a tar that fill writes, removed at the end of the test.
func importImage(t *testing.T, tag string, fill func(*tar.Writer)) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	fill(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "import", "-", tag)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}
