package nbd

// Tests with real NBD clients: libnbd's nbdinfo and nbdcopy, QEMU's
// qemu-img and qemu-io, and fio's nbd engine (Debian packages libnbd-bin,
// qemu-utils, fio). Each test skips when its client is not installed.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool returns the path of a client binary or skips the test.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		pkg := map[string]string{"qemu-img": "qemu-utils", "qemu-io": "qemu-utils", "nbdinfo": "libnbd-bin", "nbdcopy": "libnbd-bin", "fio": "fio"}[name]
		t.Skipf("%s is not installed (%v): install the Debian package %s (make test-deps) to run this test", name, err, pkg)
	}
	return p
}

// runTool runs a client to completion and returns its combined output; a
// non-zero exit fails the test.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s (%v)", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// toolServer serves one sparse-file export "vol" of size bytes.
func toolServer(t *testing.T, size int64) (*fileBackend, *testExports, string) {
	t.Helper()
	be := newFileBackend(t, size)
	ex := newTestExports(map[string]Backend{"vol": be, "spare": newFileBackend(t, 1<<20)})
	addr := startServer(t, ex)
	return be, ex, "nbd://" + addr + "/vol"
}

func randomFile(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	// Some zero runs, so that clients that detect zeroes use WRITE_ZEROES.
	clear(data[size/4 : size/4+1<<20])
	p := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d written", path, len(got), len(want))
	}
}

func TestNbdinfo(t *testing.T) {
	needTool(t, "nbdinfo")
	_, ex, uri := toolServer(t, 64<<20)

	out := runTool(t, "nbdinfo", "--json", uri)
	var info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if info.Protocol != "newstyle-fixed" || info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := info.Exports[0]
	for k, want := range map[string]any{
		"export-name":          "vol",
		"export-size":          float64(64 << 20),
		"is_read_only":         false,
		"can_flush":            true,
		"can_fua":              true,
		"can_trim":             true,
		"can_zero":             true,
		"can_fast_zero":        true,
		"can_multi_conn":       true,
		"can_df":               false,
		"block_size_minimum":   float64(1),
		"block_size_preferred": float64(4096),
		"block_size_maximum":   float64(32 << 20),
	} {
		if e[k] != want {
			t.Errorf("nbdinfo %s = %v, want %v", k, e[k], want)
		}
	}

	out = runTool(t, "nbdinfo", "--list", "--json", strings.TrimSuffix(uri, "/vol"))
	var list struct{ Exports []map[string]any }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	var names []string
	for _, e := range list.Exports {
		names = append(names, fmt.Sprint(e["export-name"]))
	}
	if fmt.Sprint(names) != "[spare vol]" {
		t.Errorf("nbdinfo --list exports %v", names)
	}

	// A missing export is an error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "nbdinfo", strings.TrimSuffix(uri, "/vol")+"/missing").CombinedOutput(); err == nil {
		t.Errorf("nbdinfo on a missing export succeeded: %s", out)
	}
	waitFor(t, "every export released", func() bool { return ex.opens.Load() == ex.releases.Load() })
}

func TestQemuImg(t *testing.T) {
	needTool(t, "qemu-img")
	const size = 32 << 20
	_, ex, uri := toolServer(t, size)
	src, data := randomFile(t, size)
	dst := filepath.Join(t.TempDir(), "dst.img")

	out := runTool(t, "qemu-img", "info", "--output=json", "-f", "raw", uri)
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != size {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	runTool(t, "qemu-img", "convert", "-n", "-p", "-f", "raw", "-O", "raw", "-W", "-m", "8", src, uri)
	runTool(t, "qemu-img", "convert", "-p", "-f", "raw", "-O", "raw", "-W", "-m", "8", uri, dst)
	sameFile(t, dst, data)
	runTool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	waitFor(t, "every export released", func() bool { return ex.opens.Load() == ex.releases.Load() })
}

func TestQemuIO(t *testing.T) {
	needTool(t, "qemu-io")
	be, _, uri := toolServer(t, 32<<20)
	cmds := []string{
		"write -P 0xab 0 64k",
		"read -P 0xab 0 64k",
		"write -f -P 0xcd 64k 64k", // FUA
		"read -P 0xcd 64k 64k",
		// Requests in flight together.
		"aio_write -P 0x11 1M 128k",
		"aio_write -P 0x22 2M 128k",
		"aio_write -P 0x33 3M 128k",
		"aio_write -P 0x44 4M 1M",
		"aio_flush",
		"aio_read -P 0x11 1M 128k",
		"aio_read -P 0x22 2M 128k",
		"aio_read -P 0x33 3M 128k",
		"aio_read -P 0x44 4M 1M",
		"aio_flush",
		"flush",
		// Unaligned I/O: the minimum block size is 1.
		"write -P 0x77 8193 1000",
		"read -P 0x77 8193 1000",
		"discard 4M 512k",
		"write -P 0x55 6M 256k",
		"write -z 6M 128k",
		"read -P 0 6M 128k",
		"read -P 0x55 6272k 128k",
		"write -z -u 7M 64k", // may unmap (trim)
		"read -P 0 7M 64k",
		// The last byte of the export.
		"write -P 0x99 32767k 1k",
		"read -P 0x99 32767k 1k",
	}
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := runTool(t, "qemu-io", append(args, uri)...)
	for _, bad := range []string{"fail", "error", "Pattern verification"} {
		if strings.Contains(strings.ToLower(out), strings.ToLower(bad)) {
			t.Fatalf("qemu-io reported %q:\n%s", bad, out)
		}
	}
	if be.flushes.Load() == 0 || be.zeroes.Load() == 0 {
		t.Errorf("qemu-io: %d flushes, %d write zeroes reached the backend", be.flushes.Load(), be.zeroes.Load())
	}

	// Reading past the end fails cleanly.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out2, _ := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", "read 32M 4k", uri).CombinedOutput()
	if !strings.Contains(string(out2), "rror") {
		t.Errorf("qemu-io read past the end: %s", out2)
	}
}

func TestNbdcopy(t *testing.T) {
	needTool(t, "nbdcopy")
	const size = 64 << 20
	be, ex, uri := toolServer(t, size)
	src, data := randomFile(t, size)
	dst := filepath.Join(t.TempDir(), "dst.img")

	// Four connections with sixteen requests each: multi-conn and
	// requests in flight.
	runTool(t, "nbdcopy", "--connections=4", "--requests=16", "--flush", src, uri)
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, "nbdcopy", "--connections=4", "--requests=16", uri, dst)
	sameFile(t, dst, data)
	if be.flushes.Load() == 0 {
		t.Errorf("nbdcopy --flush did not flush")
	}
	waitFor(t, "every export released", func() bool { return ex.opens.Load() == ex.releases.Load() })
}

func TestFio(t *testing.T) {
	needTool(t, "fio")
	// fio may be built without the nbd engine (it needs libnbd).
	if out, err := exec.Command("fio", "--enghelp=nbd").CombinedOutput(); err != nil || !strings.Contains(string(out), "uri") {
		t.Skipf("fio has no nbd engine: %v\n%s", err, out)
	}
	_, _, uri := toolServer(t, 64<<20)
	out := runTool(t, "fio", fioArgs(uri, 32<<20)...)
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
			Write struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("fio output: %v\n%s", err, out)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Write.IOBytes == 0 || res.Jobs[0].Read.IOBytes == 0 {
		t.Fatalf("fio: %s", out)
	}
	if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
		t.Fatalf("fio reported verify errors:\n%s", out)
	}
}

// fioArgs is a short random read/write job with crc32c verification
// against the export at uri, iodepth 16.
func fioArgs(uri string, size int64) []string {
	return []string{
		"--name=nbd-verify",
		"--ioengine=nbd",
		"--uri=" + uri,
		"--rw=randrw",
		"--bs=4k",
		"--iodepth=16",
		fmt.Sprintf("--size=%d", size),
		"--verify=crc32c",
		"--do_verify=1",
		"--verify_fatal=1",
		"--verify_state_save=0", // no state file in the source tree
		"--output-format=json",
	}
}
