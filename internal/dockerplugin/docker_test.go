package dockerplugin

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// The tests in this file drive the plugin through a real Docker engine: the
// docker CLI talks to dockerd, which finds the plugin by its socket under
// /run/docker/plugins. They skip only when no engine is reachable.

const pluginDir = "/run/docker/plugins"

// requireDocker skips the test when no Docker engine answers.
func requireDocker(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no Docker engine: the docker CLI is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine reachable (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the Docker tests serve a plugin socket in %s and mount volumes: run them as root", pluginDir)
	}
}

// docker runs the docker CLI and returns its trimmed stdout, or its error
// with stderr.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testImage imports a one-binary image made of busybox (Debian's
// busybox-static package): the engine has no registry to pull from.
func testImage(t *testing.T) string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Fatalf("%s is missing: install Debian's busybox-static package (make test installs it)", bb)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "data/", "tmp/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	tw.Write(data)
	for _, a := range []string{"sh", "cat", "echo", "ls", "sleep", "sync", "test", "grep", "rm", "mkdir"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("strata-test-busybox:%d", os.Getpid())
	cmd := exec.Command("docker", "import", "-", image)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	t.Cleanup(func() { docker("rmi", "-f", image) })
	return image
}

// dockerEnv is a plugin served to the local engine under a driver name of
// its own, so that tests never touch a real installation's "strata" driver.
type dockerEnv struct {
	t      *testing.T
	driver string
	image  string
	prefix string // of volume and container names
	api    Backend
	root   string
	plugin *Plugin
}

// startPlugin serves a plugin for api on /run/docker/plugins/DRIVER.sock
// until the test ends, and cleans up the containers and volumes named with
// the test's prefix.
func startPlugin(t *testing.T, kind string, api Backend, mountRoot string, mountedAt func(string) bool) *dockerEnv {
	t.Helper()
	e := &dockerEnv{
		t:      t,
		driver: fmt.Sprintf("strata-test-%d-%s", os.Getpid(), kind),
		image:  testImage(t),
		prefix: fmt.Sprintf("st%d%s-", os.Getpid(), kind),
		api:    api,
		root:   mountRoot,
	}
	p, err := New(api, Options{MountRoot: mountRoot, ReconcileInterval: 500 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if mountedAt != nil {
		p.mountedAt = mountedAt
	}
	e.plugin = p
	e.root = p.opts.MountRoot
	// Runs after the volumes' cleanup below (last registered, first run):
	// the bind mounts Run makes of the mount root and its keep directory.
	t.Cleanup(func() {
		syscall.Unmount(filepath.Join(e.root, ".keep"), syscall.MNT_DETACH)
		syscall.Unmount(e.root, syscall.MNT_DETACH)
	})
	sock := filepath.Join(pluginDir, e.driver+".sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	t.Cleanup(func() {
		// Containers first (they hold mounts), then volumes, then the plugin.
		if ids, _ := docker("ps", "-aq", "--filter", "name="+e.prefix); ids != "" {
			docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		if vols, _ := docker("volume", "ls", "-q", "--filter", "driver="+e.driver); vols != "" {
			for _, v := range strings.Fields(vols) {
				if strings.HasPrefix(v, e.prefix) {
					if _, err := docker("volume", "rm", "-f", v); err != nil {
						t.Logf("cleanup: %v", err)
					}
				}
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plugin Run: %v", err)
		}
		os.Remove(sock)
	})
	return e
}

func (e *dockerEnv) vol(name string) string { return e.prefix + name }

func (e *dockerEnv) create(name string, opts ...string) (string, error) {
	args := []string{"volume", "create", "-d", e.driver}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	return docker(append(args, e.vol(name))...)
}

// run runs a shell script in a throwaway container with volume at /data.
func (e *dockerEnv) run(volume, script string) (string, error) {
	return docker("run", "--rm", "--name", e.prefix+fmt.Sprintf("run%d", time.Now().UnixNano()),
		"--volume-driver", e.driver, "-v", e.vol(volume)+":/data", e.image, "sh", "-c", script)
}

func (e *dockerEnv) mustRun(volume, script string) string {
	e.t.Helper()
	out, err := e.run(volume, script)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *dockerEnv) inspect(volume string) map[string]string {
	e.t.Helper()
	out := mustDocker(e.t, "volume", "inspect", e.vol(volume))
	var vols []struct {
		Driver string
		Status map[string]string
	}
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 {
		e.t.Fatalf("docker volume inspect: %v: %s", err, out)
	}
	if vols[0].Driver != e.driver {
		e.t.Errorf("driver %q, want %q", vols[0].Driver, e.driver)
	}
	return vols[0].Status
}

// runDockerSuite is what a docker user does with Strata volumes; restartNode
// restarts the node daemon (or what stands for it, killed when crash) while
// a container runs.
func runDockerSuite(t *testing.T, e *dockerEnv, restartNode func(crash bool)) {
	ctx := context.Background()

	// Bad options: refused, with a message the docker CLI shows.
	for opt, want := range map[string]string{
		"colour=blue": `unknown option "colour"`,
		"size=lots":   "option size=lots",
		"fs=btrfs":    `filesystem "btrfs" is not supported`,
		"iops=100":    "QoS options are not available yet",
	} {
		if _, err := e.create("bad", opt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("docker volume create -o %s: %v, want an error with %q", opt, err, want)
		}
	}

	// Create, write from one container, read from another.
	mustCreate := func(name string, opts ...string) {
		t.Helper()
		if _, err := e.create(name, opts...); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate("data", "size=256MiB", "fs=ext4")
	e.mustRun("data", "echo v1 > /data/file && sync")
	if got := e.mustRun("data", "cat /data/file"); got != "v1" {
		t.Fatalf("second container reads %q, want v1", got)
	}
	st := e.inspect("data")
	if st["size"] != "256MiB" || st["repl"] != "1" || st["parent"] != "-" || st["fs"] != "ext4" {
		t.Errorf("inspect status %v", st)
	}

	// from=: a clone of the volume as of now.
	mustCreate("clone", "from="+e.vol("data"))
	st = e.inspect("clone")
	if !strings.HasPrefix(st["parent"], e.vol("data")+"@for-") {
		t.Errorf("clone's parent %q", st["parent"])
	}
	e.mustRun("data", "echo v2 > /data/file && sync")

	// fromSnapshot=: a clone of a snapshot taken with the API (the CLI's
	// `strata snapshot create`).
	if _, err := e.api.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: e.vol("data"), Name: "at-v2"}); err != nil {
		t.Fatal(err)
	}
	mustCreate("snapclone", "fromSnapshot="+e.vol("data")+"@at-v2")
	e.mustRun("data", "echo v3 > /data/file && sync")
	e.mustRun("clone", "echo clone > /data/own && sync")
	e.mustRun("snapclone", "echo snapclone > /data/own && sync")

	for vol, want := range map[string]string{
		"data":      "v3 -",
		"clone":     "v1 clone",
		"snapclone": "v2 snapclone",
	} {
		got := e.mustRun(vol, "cat /data/file; cat /data/own 2>/dev/null || echo -")
		if got := strings.Join(strings.Fields(got), " "); got != want {
			t.Errorf("volume %s reads %q, want %q", vol, got, want)
		}
	}

	// Two containers share one mount; the volume stays mounted until the
	// last of them stops, and cannot be removed while one uses it.
	long1, long2 := e.prefix+"long1", e.prefix+"long2"
	for _, name := range []string{long1, long2} {
		mustDocker(t, "run", "-d", "--name", name, "--volume-driver", e.driver, "-v", e.vol("data")+":/data", e.image, "sleep", "600")
	}
	mustDocker(t, "exec", long1, "sh", "-c", "echo shared > /data/shared")
	if got := mustDocker(t, "exec", long2, "cat", "/data/shared"); got != "shared" {
		t.Errorf("second running container reads %q, want shared", got)
	}
	// A clone of a volume in use holds what the containers wrote, synced
	// or not.
	mustDocker(t, "exec", long1, "sh", "-c", "echo unsynced > /data/unsynced")
	mustCreate("live", "from="+e.vol("data"))
	if got := e.mustRun("live", "cat /data/shared /data/unsynced"); strings.Join(strings.Fields(got), " ") != "shared unsynced" {
		t.Errorf("clone of a volume in use reads %q, want %q", got, "shared unsynced")
	}
	if _, err := docker("volume", "rm", e.vol("data")); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("docker volume rm of a volume in use: %v", err)
	}
	if err := e.plugin.Remove(ctx, e.vol("data")); err == nil || !strings.Contains(err.Error(), "in use by 2 container(s)") {
		t.Errorf("plugin Remove of a volume in use: %v", err)
	}
	mustDocker(t, "rm", "-f", long2)
	if got := mustDocker(t, "exec", long1, "cat", "/data/shared"); got != "shared" {
		t.Errorf("after the other container stopped, reads %q", got)
	}
	if n := len(e.plugin.state.get(e.vol("data")).Mounts); n != 1 {
		t.Errorf("%d mounts counted, want 1", n)
	}

	// Restart the node while long1 runs: a clean restart, then a crash.
	for i, how := range []string{"stop", "crash"} {
		if restartNode == nil {
			break
		}
		restartNode(how == "crash")
		// Volumes survive (the plugin's client rides over the restart).
		for _, v := range []string{"data", "clone", "snapclone"} {
			if _, err := e.plugin.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: e.vol(v)}); err != nil {
				t.Errorf("after the node %s: %v", how, err)
			}
		}
		// A new container works and sees the data.
		var got string
		var err error
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if got, err = e.run("data", "cat /data/file /data/shared"); err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("new container after the node %s: %v", how, err)
		} else if got := strings.Join(strings.Fields(got), " "); got != "v3 shared" {
			t.Errorf("new container after the node %s reads %q, want %q", how, got, "v3 shared")
		}
		// The container that ran through the restart: its /data was
		// served by the old node process; the keeper (keeper.go) brings
		// the new mount into it, so new reads and writes work.
		script := fmt.Sprintf("cat /data/file && echo after%d > /data/after && sync && cat /data/after", i)
		out, err := docker("exec", long1, "sh", "-c", script)
		want := fmt.Sprintf("v3 after%d", i)
		if got := strings.Join(strings.Fields(out), " "); err != nil || got != want {
			t.Errorf("container running through the node %s reads %q, %v; want %q", how, got, err, want)
		}
	}
	if restartNode != nil {
		// Restarting the container works too (and is what a process
		// that held files open across the restart needs).
		mustDocker(t, "restart", "-t", "1", long1)
		if got := mustDocker(t, "exec", long1, "cat", "/data/file", "/data/shared", "/data/after"); strings.Join(strings.Fields(got), " ") != "v3 shared after1" {
			t.Errorf("restarted container reads %q, want %q", got, "v3 shared after1")
		}
	}

	// Stop the last user: the volume can be removed; the clones are
	// independent volumes and can be removed in any order.
	mustDocker(t, "rm", "-f", long1)
	if n := len(e.plugin.state.get(e.vol("data")).Mounts); n != 0 {
		t.Errorf("%d mounts counted after every container stopped", n)
	}
	if e.plugin.mountedAt(filepath.Join(e.root, e.vol("data"))) {
		t.Errorf("volume still mounted after every container stopped")
	}
	for _, v := range []string{"data", "clone", "snapclone", "live"} {
		if _, err := docker("volume", "rm", e.vol(v)); err != nil {
			t.Error(err)
		}
	}
	if out := mustDocker(t, "volume", "ls", "-q", "--filter", "driver="+e.driver); strings.Contains(out, e.prefix) {
		t.Errorf("volumes left: %s", out)
	}
}

// TestDockerEngineFakeAPI drives the protocol through the real engine over
// an in-memory API whose volumes are directories and whose mounts are bind
// mounts: what docker does with the plugin, without a Strata node.
func TestDockerEngineFakeAPI(t *testing.T) {
	requireDocker(t)
	api := newFakeAPI(t.TempDir())
	root := t.TempDir()
	e := startPlugin(t, "fake", api.backend(), root, nil)
	runDockerSuite(t, e, func(bool) { api.restartNode() })
}

// testLogger sends the plugin's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
