package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/client/clienttest"
)

// runMainEnv makes the test binary act as the strata binary, so that tests
// can check the exit code and stderr of a real process.
const runMainEnv = "STRATA_CLI_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// isolate keeps the developer's environment and config file out of a test.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv(client.EnvAPI, "")
	t.Setenv(client.EnvToken, "")
	return dir
}

// cli runs the CLI in-process with args as given (no --api or --token added).
func cli(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), err
}

// on runs the CLI against srv.
func on(t *testing.T, srv *clienttest.Server, args ...string) (string, error) {
	t.Helper()
	return cli(t, append([]string{"--api", srv.Addr, "--token", clienttest.Token}, args...)...)
}

// must runs the CLI against srv and fails the test if it fails.
func must(t *testing.T, srv *clienttest.Server, args ...string) string {
	t.Helper()
	out, err := on(t, srv, args...)
	if err != nil {
		t.Fatalf("strata %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestVolumeAndSnapshotCommands(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)

	if out := must(t, srv, "volume", "create", "prod", "--size", "64MiB"); out != "prod\n" {
		t.Errorf("volume create printed %q", out)
	}
	if r := srv.LastRequest("/CreateVolume").(*stratav1.CreateVolumeRequest); r.SizeBytes != 64<<20 || r.Name != "prod" {
		t.Errorf("CreateVolume request %v", r)
	}
	if out := must(t, srv, "volume", "export", "prod"); out != "nbd://"+clienttest.NBDAddress+"/prod\n" {
		t.Errorf("volume export printed %q", out)
	}
	if out := must(t, srv, "snapshot", "create", "prod", "--name", "v1"); out != "prod@v1\n" {
		t.Errorf("snapshot create printed %q", out)
	}
	if out := must(t, srv, "snapshot", "create", "prod"); out != "prod@snap-2\n" {
		t.Errorf("snapshot create without --name printed %q", out)
	}
	if out := must(t, srv, "volume", "clone", "prod@v1", "dev1"); out != "dev1\n" {
		t.Errorf("volume clone printed %q", out)
	}
	if r := srv.LastRequest("/CloneVolume").(*stratav1.CloneVolumeRequest); r.Source != "prod@v1" || r.Name != "dev1" {
		t.Errorf("CloneVolume request %v", r)
	}
	must(t, srv, "volume", "create", "dev2", "--from", "prod@v1")
	if r := srv.LastRequest("/CreateVolume").(*stratav1.CreateVolumeRequest); r.SizeBytes != 0 || r.FromSnapshot != "prod@v1" {
		t.Errorf("CreateVolume --from request %v", r)
	}
	if out := must(t, srv, "volume", "resize", "prod", "--size", "1.5GiB"); out != "resized volume prod to 1.5GiB\n" {
		t.Errorf("volume resize printed %q", out)
	}
	must(t, srv, "volume", "revert", "prod", "--to", "v1")
	must(t, srv, "volume", "revert", "prod", "--to", "prod@v1")
	if r := srv.LastRequest("/RevertVolume").(*stratav1.RevertVolumeRequest); r.Name != "prod" || r.Snapshot != "v1" {
		t.Errorf("RevertVolume request %v", r)
	}

	want := "" +
		"NAME  SIZE   ALLOCATED  REPLICAS  SNAPSHOTS  PARENT   STATE  NODE    EXPORTS  MAX-IOPS  MAX-BW  MOUNTS\n" +
		"dev1  64MiB  0B         -         0          prod@v1  ready  node-1  0        -         -       -\n" +
		"dev2  64MiB  0B         -         0          prod@v1  ready  node-1  0        -         -       -\n" +
		"prod  64MiB  0B         -         2          -        ready  node-1  0        -         -       -\n"
	if out := must(t, srv, "volume", "list"); out != want {
		t.Errorf("volume list:\n%s\nwant:\n%s", out, want)
	}
	inspect := must(t, srv, "volume", "inspect", "dev1")
	for _, s := range []string{"Name:", "dev1", "Size:", "64MiB (67108864 bytes)", "Parent:", "prod@v1", "Layers:", "Created:"} {
		if !strings.Contains(inspect, s) {
			t.Errorf("volume inspect does not show %q:\n%s", s, inspect)
		}
	}
	snaps := must(t, srv, "snapshot", "list", "prod")
	if lines := strings.Split(strings.TrimSpace(snaps), "\n"); len(lines) != 3 ||
		!strings.HasPrefix(lines[0], "SNAPSHOT") || !strings.HasPrefix(lines[1], "prod@v1 ") ||
		!strings.Contains(lines[1], " 2 ") {
		t.Errorf("snapshot list:\n%s", snaps)
	}
	if out := must(t, srv, "snapshot", "list"); !strings.Contains(out, "prod@snap-2") {
		t.Errorf("snapshot list (all):\n%s", out)
	}

	out := must(t, srv, "snapshot", "delete", "prod@v1")
	if want := "deleted snapshot prod@v1; snapshot data kept for 2 clone(s) until they are deleted\n"; out != want {
		t.Errorf("snapshot delete printed %q, want %q", out, want)
	}
	if out := must(t, srv, "snapshot", "delete", "prod@snap-2"); out != "deleted snapshot prod@snap-2\n" {
		t.Errorf("snapshot delete (no clones) printed %q", out)
	}
	if out := must(t, srv, "volume", "delete", "dev1"); out != "deleted volume dev1\n" {
		t.Errorf("volume delete printed %q", out)
	}
	if out := must(t, srv, "volume", "list"); strings.Count(out, "\n") != 3 {
		t.Errorf("volume list after delete:\n%s", out)
	}
}

func TestMountAndUnmount(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	must(t, srv, "volume", "create", "web", "--size", "1G")
	t.Chdir(t.TempDir())
	abs, err := filepath.Abs("mnt/web")
	if err != nil {
		t.Fatal(err)
	}
	out := must(t, srv, "volume", "mount", "web", "mnt/web", "--fs", "xfs")
	r := srv.LastRequest("/MountVolume").(*stratav1.MountVolumeRequest)
	if r.Target != abs || r.FsType != "xfs" || r.Name != "web" {
		t.Errorf("MountVolume request %v; want target %s, fs xfs", r, abs)
	}
	if out != "mounted volume web at "+abs+" (xfs on /dev/loop0)\n" {
		t.Errorf("volume mount printed %q", out)
	}
	if list := must(t, srv, "volume", "list"); !strings.Contains(list, abs) {
		t.Errorf("volume list does not show the mount:\n%s", list)
	}
	// Deleting a mounted volume: the server's refusal comes back as is.
	if _, err := on(t, srv, "volume", "delete", "web"); err == nil || !strings.Contains(err.Error(), "mounted at "+abs) {
		t.Errorf("delete of a mounted volume: %v", err)
	}
	if out := must(t, srv, "volume", "unmount", "./mnt/web/"); out != "unmounted volume web from "+abs+"\n" {
		t.Errorf("volume unmount printed %q", out)
	}
	if r := srv.LastRequest("/UnmountVolume").(*stratav1.UnmountVolumeRequest); r.Target != abs {
		t.Errorf("UnmountVolume target %q, want %q", r.Target, abs)
	}
	// No --fs: the server chooses (ext4, or the filesystem already there).
	must(t, srv, "volume", "mount", "web", abs)
	if r := srv.LastRequest("/MountVolume").(*stratav1.MountVolumeRequest); r.FsType != "" {
		t.Errorf("mount without --fs sent fs_type %q", r.FsType)
	}
	if _, err := on(t, srv, "volume", "unmount", "/nowhere"); err == nil || err.Error() != "no volume is mounted at /nowhere" {
		t.Errorf("unmount of a directory that is not mounted: %v", err)
	}
}

func TestOutputFormats(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	must(t, srv, "volume", "create", "a", "--size", "16MiB")
	must(t, srv, "snapshot", "create", "a", "--name", "s1")
	must(t, srv, "volume", "clone", "a@s1", "b")

	// json: the REST shape, lowerCamelCase names, every field present.
	var list struct {
		Volumes []map[string]any `json:"volumes"`
	}
	out := must(t, srv, "volume", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("volume list -o json is not JSON: %v\n%s", err, out)
	}
	if len(list.Volumes) != 2 || list.Volumes[1]["name"] != "b" || list.Volumes[1]["parent"] != "a@s1" ||
		list.Volumes[0]["sizeBytes"] != "16777216" {
		t.Errorf("volume list -o json: %v", list.Volumes)
	}
	if _, ok := list.Volumes[0]["mounts"]; !ok {
		t.Errorf("volume list -o json leaves out empty fields: %v", list.Volumes[0])
	}
	if !strings.HasPrefix(out, "{\n  \"volumes\": [") {
		t.Errorf("volume list -o json is not indented:\n%s", out)
	}

	var vol map[string]any
	out = must(t, srv, "volume", "inspect", "b", "-o", "yaml")
	if err := yaml.Unmarshal([]byte(out), &vol); err != nil {
		t.Fatalf("volume inspect -o yaml is not YAML: %v\n%s", err, out)
	}
	if vol["name"] != "b" || vol["parent"] != "a@s1" || vol["createdAt"] != "2026-01-02T03:04:05Z" {
		t.Errorf("volume inspect -o yaml: %v", vol)
	}
	out = must(t, srv, "volume", "inspect", "b", "--output=json")
	if err := json.Unmarshal([]byte(out), &vol); err != nil || vol["name"] != "b" {
		t.Errorf("volume inspect -o json: %v\n%s", err, out)
	}

	var snaps struct {
		Snapshots []map[string]any `json:"snapshots"`
	}
	out = must(t, srv, "snapshot", "list", "-o", "yaml")
	if err := yaml.Unmarshal([]byte(out), &snaps); err != nil || len(snaps.Snapshots) != 1 ||
		snaps.Snapshots[0]["name"] != "s1" || snaps.Snapshots[0]["clones"] != float64(1) {
		t.Errorf("snapshot list -o yaml: %v, %v\n%s", snaps, err, out)
	}

	// An empty list is still a list.
	srv2 := clienttest.New(t)
	if out := must(t, srv2, "volume", "list", "-o", "json"); !strings.Contains(out, `"volumes": []`) {
		t.Errorf("empty volume list -o json:\n%s", out)
	}
	if out := must(t, srv2, "volume", "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("empty volume list:\n%s", out)
	}
}

func TestStatus(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	must(t, srv, "volume", "create", "a", "--size", "16MiB")
	out := must(t, srv, "status")
	for _, s := range []string{
		"Version:", "v0.0.0-test", "Cluster:", "c0ffee", "Volumes:    1", "Snapshots:  0",
		"NODE", "CAPACITY", "AVAILABLE", "ALLOCATED",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("status does not show %q:\n%s", s, out)
		}
	}
	var row string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "node-1") {
			row = l
		}
	}
	if f := strings.Fields(row); len(f) != 7 || f[1] != "online" || f[2] != srv.Addr ||
		f[3] != clienttest.NBDAddress || f[4] != "100GiB" || f[5] != "90GiB" || f[6] != "10GiB" {
		t.Errorf("status node row %q", row)
	}
}

// TestRefusedBeforeAnyCall checks that mistakes in arguments and flags fail
// at once, with a message naming the problem, and send nothing to the server.
func TestRefusedBeforeAnyCall(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create"}, "expects NAME, got 0 arguments"},
		{[]string{"volume", "create", "a", "b", "--size", "1G"}, "expects NAME, got 2 arguments"},
		{[]string{"volume", "create", "Bad_Name", "--size", "1GiB"}, "lower-case DNS label"},
		{[]string{"volume", "create", strings.Repeat("a", 64), "--size", "1GiB"}, "63"},
		{[]string{"volume", "create", "-lead", "--size", "1GiB"}, "unknown shorthand flag"},
		{[]string{"volume", "create", "nosize"}, "--size is required"},
		{[]string{"volume", "create", "zero", "--size", "0"}, "size \"0\" must be positive"},
		{[]string{"volume", "create", "neg", "--size", "-5GiB"}, "must be positive"},
		{[]string{"volume", "create", "junk", "--size", "ten"}, "size \"ten\" is not a number"},
		{[]string{"volume", "create", "c", "--from", "nosnap"}, "VOL@SNAP"},
		{[]string{"volume", "create", "c", "--from", "a@B"}, "snapshot name \"B\""},
		{[]string{"volume", "list", "extra"}, "expects no arguments, got 1 argument"},
		{[]string{"volume", "list", "-o", "xml"}, "unknown output format \"xml\""},
		{[]string{"volume", "inspect", "good", "-o", "xml"}, "unknown output format \"xml\""},
		{[]string{"volume", "inspect"}, "expects NAME"},
		{[]string{"volume", "delete"}, "expects NAME"},
		{[]string{"volume", "delete", "UP"}, "volume name \"UP\""},
		{[]string{"volume", "resize", "a"}, "--size is required"},
		{[]string{"volume", "resize", "a", "--size", "1Q"}, "size \"1Q\""},
		{[]string{"volume", "clone", "nosnap", "c3"}, "must be written VOL@SNAP"},
		{[]string{"volume", "clone", "a@b@c", "c3"}, "VOL@SNAP"},
		{[]string{"volume", "clone", "a@s"}, "expects VOL@SNAP NEWNAME, got 1 argument"},
		{[]string{"volume", "clone", "a@s", "New"}, "volume name \"New\""},
		{[]string{"volume", "revert", "a"}, "--to is required"},
		{[]string{"volume", "revert", "a", "--to", "b@s"}, "snapshot of volume b, not a"},
		{[]string{"volume", "revert", "a", "--to", "S"}, "snapshot name \"S\""},
		{[]string{"volume", "export"}, "expects NAME"},
		{[]string{"volume", "mount", "a"}, "expects NAME DIR, got 1 argument"},
		{[]string{"volume", "mount", "a", "/mnt", "--fs", "btrfs"}, "--fs \"btrfs\" is not supported"},
		{[]string{"volume", "unmount"}, "expects DIR"},
		{[]string{"volume", "frob"}, "unknown command \"frob\" for \"strata volume\""},
		{[]string{"volume", "lsit"}, "did you mean \"list\"?"},
		{[]string{"snapshot", "create"}, "expects VOL"},
		{[]string{"snapshot", "create", "a", "--name", "Bad"}, "snapshot name \"Bad\""},
		{[]string{"snapshot", "list", "a", "b"}, "expects at most VOL, got 2 arguments"},
		{[]string{"snapshot", "list", "-o", "toml"}, "unknown output format"},
		{[]string{"snapshot", "delete", "a"}, "VOL@SNAP"},
		{[]string{"snapshot", "delete"}, "expects VOL@NAME"},
		{[]string{"snapshot", "nope"}, "unknown command"},
		{[]string{"status", "now"}, "expects no arguments"},
	} {
		_, err := on(t, srv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("strata %s: error %v, want it to mention %q", strings.Join(tc.args, " "), err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("strata %s: error is not one line: %q", strings.Join(tc.args, " "), err)
		}
	}
	if reqs := srv.Requests(); len(reqs) != 0 {
		t.Errorf("refused commands sent %d requests, first %s", len(reqs), reqs[0].Method)
	}
}

func TestServerErrorsAreClean(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "inspect", "missing"}, `volume "missing" not found`},
		{[]string{"volume", "delete", "missing"}, `volume "missing" not found`},
		{[]string{"volume", "clone", "missing@s", "c"}, `volume "missing" not found`},
		{[]string{"snapshot", "create", "missing"}, `volume "missing" not found`},
	} {
		_, err := on(t, srv, tc.args...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("strata %s: error %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	must(t, srv, "volume", "create", "a", "--size", "1G")
	if _, err := on(t, srv, "volume", "resize", "a", "--size", "1M"); err == nil || !strings.Contains(err.Error(), "shrink") {
		t.Errorf("shrink: %v", err)
	}
	if _, err := on(t, srv, "volume", "create", "a", "--size", "2G"); err == nil || err.Error() != `volume "a" already exists` {
		t.Errorf("create of an existing volume: %v", err)
	}
	srv.FailWith("/ListVolumes", status.Error(codes.Internal, "disk on fire"))
	if _, err := on(t, srv, "volume", "list"); err == nil || err.Error() != "disk on fire" {
		t.Errorf("server error: %v, want %q", err, "disk on fire")
	}
}

func TestConfigAndPrecedence(t *testing.T) {
	dir := isolate(t)
	srv := clienttest.New(t)

	// No flags, no environment, no config file: say what to do.
	_, err := cli(t, "volume", "list")
	if !errors.Is(err, client.ErrNoConfig) || !strings.Contains(err.Error(), "strata up") || !strings.Contains(err.Error(), "--api") {
		t.Fatalf("without config: %v", err)
	}
	// The file strata up writes is enough.
	if err := client.SaveConfig(filepath.Join(dir, "strata", "config.yaml"), client.Config{API: srv.Addr, Token: clienttest.Token}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "volume", "list"); err != nil {
		t.Fatalf("with the config file: %v", err)
	}
	// The environment overrides the file, and the flags the environment.
	t.Setenv(client.EnvToken, "wrong")
	if _, err := cli(t, "volume", "list"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("STRATA_TOKEN=wrong: %v, want an error about the token", err)
	}
	if _, err := cli(t, "--token", clienttest.Token, "volume", "list"); err != nil {
		t.Fatalf("--token over STRATA_TOKEN: %v", err)
	}
	t.Setenv(client.EnvToken, "")
	t.Setenv(client.EnvAPI, "127.0.0.1:1")
	if _, err := cli(t, "status"); err == nil || !strings.Contains(err.Error(), "cannot reach the Strata API at 127.0.0.1:1") {
		t.Fatalf("STRATA_API over the file: %v", err)
	}
	if _, err := cli(t, "--api", srv.Addr, "status"); err != nil {
		t.Fatalf("--api over STRATA_API (token from the file): %v", err)
	}
	// A wrong --token without a config file still reaches the server.
	os.Remove(filepath.Join(dir, "strata", "config.yaml"))
	if _, err := cli(t, "--api", srv.Addr, "--token", "wrong", "volume", "list"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("--token wrong: %v", err)
	}
}

// strataProcess runs the test binary as the strata command.
func strataProcess(t *testing.T, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "XDG_CONFIG_HOME="+t.TempDir(), client.EnvAPI+"=", client.EnvToken+"=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		exit = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), exit
}

func TestProcessExitAndStderr(t *testing.T) {
	srv := clienttest.New(t)
	srv.FailWith("/DeleteVolume", status.Error(codes.FailedPrecondition, `cannot delete volume "a": it is exported (1 NBD connections)`))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
		exit   int
		stdout string
	}{
		{"server error", []string{"--api", srv.Addr, "--token", clienttest.Token, "volume", "delete", "a"},
			"error: cannot delete volume \"a\": it is exported (1 NBD connections)\n", 1, ""},
		{"connection refused", []string{"--api", dead, "--token", "t", "status"},
			"error: cannot reach the Strata API at " + dead + ": is `strata up` running? (connection refused)\n", 1, ""},
		{"usage error", []string{"volume", "clone", "a@s"},
			"error: strata volume clone expects VOL@SNAP NEWNAME, got 1 argument (usage: strata volume clone VOL@SNAP NEWNAME [--repl N] [--nodes N1,N2] [flags]; see --help)\n", 1, ""},
		{"success", []string{"--api", srv.Addr, "--token", clienttest.Token, "volume", "create", "a", "--size", "1M"},
			"", 0, "a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, exit := strataProcess(t, tc.args...)
			if errOut != tc.stderr || exit != tc.exit || out != tc.stdout {
				t.Errorf("strata %s:\nstdout %q\nstderr %q\nexit %d\nwant stdout %q, stderr %q, exit %d",
					strings.Join(tc.args, " "), out, errOut, exit, tc.stdout, tc.stderr, tc.exit)
			}
		})
	}
}

// TestHelp checks that every client command says what it does and shows
// an example.
func TestHelp(t *testing.T) {
	isolate(t)
	root := newRootCmd()
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if c == root && !slices.Contains([]string{"status", "volume", "snapshot", "cluster", "node", "user", "secret"}, sub.Name()) {
				continue // other engineers' commands (up, ...) and cobra's own
			}
			n++
			path := strings.Fields(sub.CommandPath())[1:]
			out, err := cli(t, append(path, "--help")...)
			if err != nil {
				t.Errorf("%s --help: %v", sub.CommandPath(), err)
			}
			if sub.Short == "" || !strings.Contains(out, sub.Short) && !strings.Contains(out, sub.Long) {
				t.Errorf("%s --help does not say what it does:\n%s", sub.CommandPath(), out)
			}
			if !strings.Contains(out, "Examples:\n  strata ") && !strings.Contains(out, "Examples:\n  sudo strata ") {
				t.Errorf("%s --help has no example:\n%s", sub.CommandPath(), out)
			}
			walk(sub)
		}
	}
	walk(root)
	if n != 38 {
		t.Errorf("found %d client commands, want 38 (status, volume and 16 subcommands, snapshot and 3, cluster and 3, node and 1, user and 5, secret and 3)", n)
	}
	// A group alone prints its help and succeeds.
	if out, err := cli(t, "volume"); err != nil || !strings.Contains(out, "Available Commands:") {
		t.Errorf("strata volume: %v\n%s", err, out)
	}
}
