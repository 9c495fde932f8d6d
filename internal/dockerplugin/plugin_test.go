package dockerplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// harness is a plugin on a fake API, served on a unix socket in a temp dir,
// driven over HTTP the way dockerd drives it.
type harness struct {
	t      *testing.T
	api    *fakeAPI
	root   string
	plugin *Plugin
	http   *http.Client
	stop   func()
}

func newHarness(t *testing.T, api *fakeAPI, root string) *harness {
	t.Helper()
	p, err := New(api.backend(), Options{MountRoot: root, ReconcileInterval: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	p.mountedAt = api.mountedAt
	p.hostMounts = false
	sock := filepath.Join(t.TempDir(), "strata.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	h := &harness{
		t: t, api: api, root: root, plugin: p,
		http: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}},
	}
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
			h.stop = nil
		}
	})
	return h
}

// call posts req to method and decodes the answer into resp; it returns the
// Err field of the answer and checks that errors come with status 500.
func (h *harness) call(method string, req, resp any) string {
	h.t.Helper()
	b, _ := json.Marshal(req)
	r, err := h.http.Post("http://plugin/"+method, contentType, bytes.NewReader(b))
	if err != nil {
		h.t.Fatalf("%s: %v", method, err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	if ct := r.Header.Get("Content-Type"); ct != contentType {
		h.t.Errorf("%s: content type %q", method, ct)
	}
	var e errResponse
	if err := json.Unmarshal(body, &e); err != nil {
		h.t.Fatalf("%s: answer %q: %v", method, body, err)
	}
	if (e.Err != "") != (r.StatusCode != http.StatusOK) {
		h.t.Errorf("%s: status %d with Err %q", method, r.StatusCode, e.Err)
	}
	if resp != nil {
		if err := json.Unmarshal(body, resp); err != nil {
			h.t.Fatalf("%s: answer %q: %v", method, body, err)
		}
	}
	return e.Err
}

func (h *harness) mustCall(method string, req, resp any) {
	h.t.Helper()
	if msg := h.call(method, req, resp); msg != "" {
		h.t.Fatalf("%s %v: %s", method, req, msg)
	}
}

func (h *harness) create(name string, opts map[string]string) string {
	h.t.Helper()
	return h.call("VolumeDriver.Create", createRequest{Name: name, Opts: opts}, nil)
}

func (h *harness) mount(name, id string) string {
	h.t.Helper()
	var resp mountResponse
	h.mustCall("VolumeDriver.Mount", mountRequest{Name: name, ID: id}, &resp)
	return resp.Mountpoint
}

func (h *harness) unmount(name, id string) {
	h.t.Helper()
	h.mustCall("VolumeDriver.Unmount", mountRequest{Name: name, ID: id}, nil)
}

func TestHandshakeAndCapabilities(t *testing.T) {
	h := newHarness(t, newFakeAPI(""), t.TempDir())
	var act struct{ Implements []string }
	h.mustCall("Plugin.Activate", nil, &act)
	if !reflect.DeepEqual(act.Implements, []string{"VolumeDriver"}) {
		t.Errorf("Implements = %v", act.Implements)
	}
	var caps capabilitiesResponse
	h.mustCall("VolumeDriver.Capabilities", nil, &caps)
	if caps.Capabilities.Scope != "global" {
		t.Errorf("scope %q, want global", caps.Capabilities.Scope)
	}
	if msg := h.call("VolumeDriver.Nope", nil, nil); !strings.Contains(msg, "no method") {
		t.Errorf("unknown method: %q", msg)
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		opts    map[string]string
		want    createSpec
		wantErr string
	}{
		{opts: nil, want: createSpec{}},
		{opts: map[string]string{"size": "1GiB", "fs": "XFS", "repl": "1"}, want: createSpec{size: 1 << 30, fs: "xfs", repl: 1}},
		{opts: map[string]string{"Size": "512M"}, want: createSpec{size: 512 << 20}},
		{opts: map[string]string{"from": "db"}, want: createSpec{from: "db"}},
		{opts: map[string]string{"fromSnapshot": "db@nightly", "size": "20G"}, want: createSpec{fromSnapshot: "db@nightly", size: 20 << 30}},
		{opts: map[string]string{"size": "lots"}, wantErr: "option size=lots"},
		{opts: map[string]string{"size": "-1"}, wantErr: "must be positive"},
		{opts: map[string]string{"fs": "btrfs"}, wantErr: `filesystem "btrfs" is not supported (ext4 or xfs)`},
		{opts: map[string]string{"repl": "2"}, want: createSpec{repl: 2}},
		{opts: map[string]string{"repl": "x"}, wantErr: "must be 1, 2 or 3"},
		{opts: map[string]string{"repl": "4"}, wantErr: "must be 1, 2 or 3"},
		{opts: map[string]string{"iops": "1000"}, wantErr: "QoS options are not available yet"},
		{opts: map[string]string{"zone": "a"}, wantErr: "placement options are not available yet"},
		{opts: map[string]string{"colour": "blue"}, wantErr: `unknown option "colour" (known options: size, repl, fs, from, fromSnapshot)`},
		{opts: map[string]string{"from": "Bad_Name"}, wantErr: "option from=Bad_Name: volume name"},
		{opts: map[string]string{"fromSnapshot": "db"}, wantErr: "want VOLUME@SNAPSHOT"},
		{opts: map[string]string{"fromSnapshot": "db@"}, wantErr: "snapshot name must not be empty"},
		{opts: map[string]string{"from": "a", "fromSnapshot": "a@b"}, wantErr: "exclude each other"},
		{opts: map[string]string{"from": "a", "fs": "xfs"}, wantErr: "keeps its source's filesystem"},
	} {
		got, err := parseOptions(tc.opts)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("parseOptions(%v) = %v, want error with %q", tc.opts, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseOptions(%v) = %+v, %v; want %+v", tc.opts, got, err, tc.want)
		}
	}
}

func TestCreateGetListRemove(t *testing.T) {
	api := newFakeAPI("")
	h := newHarness(t, api, t.TempDir())

	if msg := h.create("data", map[string]string{"size": "1GiB", "fs": "xfs"}); msg != "" {
		t.Fatal(msg)
	}
	if msg := h.create("plain", nil); msg != "" {
		t.Fatal(msg)
	}
	if got, want := api.callsOf("CreateVolume"), []string{"data size=1073741824 from=", "plain size=10737418240 from="}; !reflect.DeepEqual(got, want) {
		t.Errorf("CreateVolume calls %q, want %q", got, want)
	}
	// Messages the docker CLI shows: no sentinel suffix.
	for name, opts := range map[string]map[string]string{
		"bad":                   {"colour": "blue"},
		"Bad_Name":              nil,
		strings.Repeat("a", 64): nil,
	} {
		msg := h.create(name, opts)
		if msg == "" || strings.HasSuffix(msg, ": invalid argument") {
			t.Errorf("create %q %v: Err %q", name, opts, msg)
		}
	}
	if msg := h.create(strings.Repeat("a", 64), nil); !strings.Contains(msg, "anonymous volumes are not supported") {
		t.Errorf("anonymous volume: %q", msg)
	}

	var get getResponse
	h.mustCall("VolumeDriver.Get", nameRequest{Name: "data"}, &get)
	st := get.Volume.Status
	if get.Volume.Name != "data" || st["size"] != "1GiB" || st["repl"] != "1" || st["parent"] != "-" || st["fs"] != "xfs" || st["state"] != "ready" {
		t.Errorf("Get = %+v", get.Volume)
	}
	if get.Volume.Mountpoint != "" || get.Volume.CreatedAt == "" {
		t.Errorf("Get = %+v", get.Volume)
	}
	if msg := h.call("VolumeDriver.Get", nameRequest{Name: "nope"}, nil); !strings.Contains(msg, `volume "nope" not found`) {
		t.Errorf("Get of a missing volume: %q", msg)
	}

	var list listResponse
	h.mustCall("VolumeDriver.List", nil, &list)
	if len(list.Volumes) != 2 {
		t.Errorf("List = %+v", list.Volumes)
	}

	var path mountResponse
	h.mustCall("VolumeDriver.Path", nameRequest{Name: "data"}, &path)
	if path.Mountpoint != "" {
		t.Errorf("Path of an unmounted volume = %q", path.Mountpoint)
	}

	h.mustCall("VolumeDriver.Remove", nameRequest{Name: "data"}, nil)
	h.mustCall("VolumeDriver.Remove", nameRequest{Name: "data"}, nil) // gone already: fine
	if _, ok := h.plugin.state.all()["data"]; ok {
		t.Error("state of a removed volume kept")
	}
	api.setFail("DeleteVolume", errors.New("etcd is down"))
	if msg := h.call("VolumeDriver.Remove", nameRequest{Name: "plain"}, nil); !strings.Contains(msg, "etcd is down") {
		t.Errorf("Remove with a failing API: %q", msg)
	}
}

func TestMountCounting(t *testing.T) {
	api := newFakeAPI("")
	root := t.TempDir()
	h := newHarness(t, api, root)
	if msg := h.create("data", map[string]string{"fs": "xfs"}); msg != "" {
		t.Fatal(msg)
	}
	target := filepath.Join(root, "data")

	if mp := h.mount("data", "c1"); mp != target {
		t.Fatalf("Mountpoint %q, want %q", mp, target)
	}
	if mp := h.mount("data", "c2"); mp != target {
		t.Fatalf("Mountpoint %q, want %q", mp, target)
	}
	h.mount("data", "c2") // repeated: counted once
	if got, want := api.callsOf("MountVolume"), []string{"data " + target + " xfs"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MountVolume calls %q, want %q", got, want)
	}
	var get getResponse
	h.mustCall("VolumeDriver.Get", nameRequest{Name: "data"}, &get)
	if get.Volume.Mountpoint != target || get.Volume.Status["containers"] != "2" {
		t.Errorf("Get while mounted = %+v", get.Volume)
	}
	var path mountResponse
	h.mustCall("VolumeDriver.Path", nameRequest{Name: "data"}, &path)
	if path.Mountpoint != target {
		t.Errorf("Path = %q", path.Mountpoint)
	}

	if msg := h.call("VolumeDriver.Remove", nameRequest{Name: "data"}, nil); !strings.Contains(msg, "in use by 2 container(s)") {
		t.Errorf("Remove while in use: %q", msg)
	}

	h.unmount("data", "c1")
	if n := len(api.callsOf("UnmountVolume")); n != 0 {
		t.Fatalf("unmounted while c2 uses the volume")
	}
	h.unmount("data", "c1") // repeated: nothing
	h.unmount("data", "c2")
	if got := api.callsOf("UnmountVolume"); !reflect.DeepEqual(got, []string{target}) {
		t.Errorf("UnmountVolume calls %q", got)
	}
	h.mustCall("VolumeDriver.Remove", nameRequest{Name: "data"}, nil)

	if msg := h.call("VolumeDriver.Mount", mountRequest{Name: "nope", ID: "c3"}, nil); !strings.Contains(msg, `volume "nope" not found`) {
		t.Errorf("Mount of a missing volume: %q", msg)
	}
}

func TestMountFailureLeavesNoCount(t *testing.T) {
	api := newFakeAPI("")
	h := newHarness(t, api, t.TempDir())
	h.create("data", nil)
	api.setFail("MountVolume", errors.New("mkfs.ext4 failed: no space"))
	if msg := h.call("VolumeDriver.Mount", mountRequest{Name: "data", ID: "c1"}, nil); !strings.Contains(msg, "mkfs.ext4 failed") {
		t.Errorf("Mount: %q", msg)
	}
	if n := len(h.plugin.state.get("data").Mounts); n != 0 {
		t.Errorf("%d mounts counted after a failed mount", n)
	}
	api.setFail("MountVolume", nil)
	h.mount("data", "c1")
}

func TestUnmountFailureIsRetried(t *testing.T) {
	api := newFakeAPI("")
	root := t.TempDir()
	h := newHarness(t, api, root)
	h.create("data", nil)
	h.mount("data", "c1")
	api.setFail("UnmountVolume", errors.New("target is busy"))
	if msg := h.call("VolumeDriver.Unmount", mountRequest{Name: "data", ID: "c1"}, nil); !strings.Contains(msg, "target is busy") {
		t.Errorf("Unmount: %q", msg)
	}
	api.setFail("UnmountVolume", nil)
	if err := h.plugin.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if api.mountedAt(filepath.Join(root, "data")) {
		t.Error("idle volume still mounted after reconcile")
	}
	h.mustCall("VolumeDriver.Remove", nameRequest{Name: "data"}, nil)
}

func TestClones(t *testing.T) {
	api := newFakeAPI("")
	h := newHarness(t, api, t.TempDir())
	h.create("prod", map[string]string{"size": "2GiB", "fs": "xfs"})

	if msg := h.create("copy", map[string]string{"from": "prod"}); msg != "" {
		t.Fatal(msg)
	}
	snaps := api.callsOf("CreateSnapshot")
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0], "prod@for-copy-") {
		t.Fatalf("CreateSnapshot calls %q", snaps)
	}
	var get getResponse
	h.mustCall("VolumeDriver.Get", nameRequest{Name: "copy"}, &get)
	if get.Volume.Status["parent"] != snaps[0] || get.Volume.Status["size"] != "2GiB" || get.Volume.Status["fs"] != "xfs" {
		t.Errorf("clone status %v", get.Volume.Status)
	}

	if msg := h.create("copy2", map[string]string{"fromSnapshot": snaps[0], "size": "4GiB"}); msg != "" {
		t.Fatal(msg)
	}
	h.mustCall("VolumeDriver.Get", nameRequest{Name: "copy2"}, &get)
	if get.Volume.Status["parent"] != snaps[0] || get.Volume.Status["size"] != "4GiB" {
		t.Errorf("clone status %v", get.Volume.Status)
	}

	if msg := h.create("copy", map[string]string{"from": "prod"}); !strings.Contains(msg, `volume "copy" already exists`) {
		t.Errorf("clone over an existing volume: %q", msg)
	}
	if msg := h.create("x", map[string]string{"from": "nope"}); !strings.Contains(msg, `source volume "nope"`) {
		t.Errorf("clone of a missing volume: %q", msg)
	}
	if msg := h.create("x", map[string]string{"fromSnapshot": "prod@nope"}); !strings.Contains(msg, "not found") {
		t.Errorf("clone of a missing snapshot: %q", msg)
	}

	// A clone that fails leaves no snapshot behind.
	api.setFail("CreateVolume", errors.New("pool is full"))
	if msg := h.create("copy3", map[string]string{"from": "prod"}); !strings.Contains(msg, "pool is full") {
		t.Errorf("failed clone: %q", msg)
	}
	snaps = api.callsOf("CreateSnapshot")
	if deleted := api.callsOf("DeleteSnapshot"); len(deleted) != 1 || deleted[0] != snaps[len(snaps)-1] {
		t.Errorf("DeleteSnapshot calls %q after the failed clone of %q", deleted, snaps[len(snaps)-1])
	}
}

func TestCloneSnapshotName(t *testing.T) {
	now := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	for _, name := range []string{"a", strings.Repeat("b", 63), strings.Repeat("c", 57) + "-" + "ddddd"} {
		s := cloneSnapshotName(name, now)
		if err := errdefs.ValidateName("snapshot", s); err != nil {
			t.Errorf("cloneSnapshotName(%q) = %q: %v", name, s, err)
		}
	}
}

// TestRestart: the counts survive a restart of the plugin, and the reconcile
// loop mounts again what a node restart lost.
func TestRestart(t *testing.T) {
	api := newFakeAPI("")
	root := t.TempDir()
	h := newHarness(t, api, root)
	h.create("data", map[string]string{"fs": "xfs"})
	h.create("idle", nil)
	h.mount("data", "c1")
	h.mount("data", "c2")
	h.mount("idle", "c3")
	h.unmount("idle", "c3")
	h.stop()
	h.stop = nil

	api.restartNode()
	h2 := newHarness(t, api, root)
	if got := h2.plugin.state.get("data").Mounts; !reflect.DeepEqual(got, []string{"c1", "c2"}) {
		t.Fatalf("mounts after restart %v", got)
	}
	if err := h2.plugin.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(root, "data")
	if !api.mountedAt(target) {
		t.Fatal("volume in use not mounted again after a node restart")
	}
	if calls := api.callsOf("MountVolume"); calls[len(calls)-1] != "data "+target+" xfs" {
		t.Errorf("last MountVolume %q", calls[len(calls)-1])
	}
	if api.mountedAt(filepath.Join(root, "idle")) {
		t.Error("idle volume mounted")
	}
	h2.unmount("data", "c1")
	h2.unmount("data", "c2")
	if api.mountedAt(target) {
		t.Error("still mounted after the last unmount")
	}
	h2.mustCall("VolumeDriver.Remove", nameRequest{Name: "data"}, nil)
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFileName)
	s, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update("v", func(v *volumeState) { v.FS = "xfs"; v.Mounts = []string{"a"} }); err != nil {
		t.Fatal(err)
	}
	s2, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.get("v"); got.FS != "xfs" || !reflect.DeepEqual(got.Mounts, []string{"a"}) {
		t.Errorf("reloaded %+v", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := s.update("v", func(v *volumeState) { v.FS = ""; v.Mounts = nil }); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.all()["v"]; ok {
		t.Error("empty entry kept")
	}

	// A failed save changes nothing.
	s.path = filepath.Join(dir, "missing", stateFileName)
	if err := s.update("w", func(v *volumeState) { v.FS = "ext4" }); err == nil {
		t.Fatal("save into a missing directory succeeded")
	}
	if _, ok := s.all()["w"]; ok {
		t.Error("failed update kept in memory")
	}

	os.WriteFile(path, []byte("{"), 0o600)
	if _, err := loadState(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt state: %v", err)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen: %v", err)
	}
	ln.Close()
	// Go removes the socket on Close; a stale one from a crash is replaced.
	os.WriteFile(sock, nil, 0o600)
	ln2, err := Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

type countingConn struct{ resets int }

func (c *countingConn) ResetConnectBackoff() { c.resets++ }

func TestRetryUnavailable(t *testing.T) {
	conn := &countingConn{}
	r := &retrier{conn: conn, budget: 5 * time.Second}
	calls := 0
	v, err := retry(context.Background(), r, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, fmt.Errorf("cannot reach the Strata API: %w", errdefs.ErrUnavailable)
		}
		return 42, nil
	})
	if v != 42 || err != nil || calls != 3 || conn.resets != 2 {
		t.Errorf("retry = %d, %v after %d calls and %d resets", v, err, calls, conn.resets)
	}
	// Other errors are not retried; the budget bounds the wait.
	calls = 0
	if _, err := retry(context.Background(), r, func(context.Context) (int, error) {
		calls++
		return 0, errdefs.ErrNotFound
	}); !errors.Is(err, errdefs.ErrNotFound) || calls != 1 {
		t.Errorf("not found: %v after %d calls", err, calls)
	}
	r.budget = 300 * time.Millisecond
	start := time.Now()
	if _, err := retry(context.Background(), r, func(context.Context) (int, error) {
		return 0, errdefs.ErrUnavailable
	}); !errors.Is(err, errdefs.ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Errorf("unavailable: %v after %v", err, time.Since(start))
	}
}

func TestReconcileForgetsDeletedVolumes(t *testing.T) {
	api := newFakeAPI("")
	h := newHarness(t, api, t.TempDir())
	h.create("gone", map[string]string{"fs": "xfs"})
	if _, err := api.DeleteVolume(context.Background(), &stratav1.DeleteVolumeRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := h.plugin.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.plugin.state.all()["gone"]; ok {
		t.Error("state of a volume deleted with the CLI kept")
	}
}
