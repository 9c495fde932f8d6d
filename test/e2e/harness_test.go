// Package e2e runs the real strata binary: a node started with `strata up`
// in a temporary directory, driven through the CLI and real NBD clients.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// strataBinary builds cmd/strata once per test run.
func strataBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "strata")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/strata").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, FUSE, mount)")
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make test-deps installs it)", tool)
		}
	}
}

// node is one `strata up` process and the environment its CLI calls use.
type node struct {
	t       *testing.T
	bin     string
	dir     string // holds data/, config/ and node.log
	dataDir string
	api     string
	nbd     string
	replica string
	etcdC   string
	etcdP   string
	cmd     *exec.Cmd
	done    chan struct{}
	extra   []string // more flags for strata up
	// ip, when set, starts the node with --ip instead of the address
	// flags (api, nbd, etcdC and etcdP must be ip's default ports).
	ip string
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	return newNodeAt(t, dir, filepath.Join(dir, "data"))
}

func newNodeAt(t *testing.T, dir, dataDir string, extra ...string) *node {
	t.Helper()
	n := &node{t: t, bin: strataBinary(t), dir: dir, dataDir: dataDir, extra: extra,
		api: freePort(t), nbd: freePort(t), replica: freePort(t), etcdC: freePort(t), etcdP: freePort(t)}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *node) env() []string {
	return append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(n.dir, "config"), "STRATA_API=", "STRATA_TOKEN=")
}

// start starts the node's process and waits until it answers.
func (n *node) start() {
	n.t.Helper()
	n.spawn()
	n.waitUp()
}

// spawn starts the node's process without waiting for it to answer.
func (n *node) spawn() {
	t := n.t
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(n.dir, "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"up", "--data-dir", n.dataDir, "--api-addr", n.api, "--nbd-addr", n.nbd,
		"--replica-addr", n.replica, "--etcd-client-url", "http://" + n.etcdC, "--etcd-peer-url", "http://" + n.etcdP}
	if n.ip != "" {
		args = []string{"up", "--data-dir", n.dataDir, "--ip", n.ip}
	}
	n.cmd = exec.Command(n.bin, append(args, n.extra...)...)
	n.cmd.Env = n.env()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
}

// waitUp waits until a spawned node answers its API.
func (n *node) waitUp() {
	t := n.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, _, err := n.try("status"); err == nil {
			return
		}
		select {
		case <-n.done:
			t.Fatalf("strata up exited early:\n%s", n.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("strata up did not answer within 60s:\n%s", n.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop sends SIGTERM and waits for a clean exit.
func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(60 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		n.t.Errorf("strata up did not stop within 60s of SIGTERM:\n%s", n.log())
	}
	n.cmd = nil
}

// kill9 kills the node with SIGKILL, as a crash would.
func (n *node) kill9() {
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// try runs the CLI against this node.
func (n *node) try(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin, append([]string{"--api", n.api}, args...)...)
	cmd.Env = n.env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// run runs the CLI and fails the test if it fails.
func (n *node) run(args ...string) string {
	n.t.Helper()
	out, errOut, err := n.try(args...)
	if err != nil {
		n.t.Fatalf("strata %s: %v\nstderr: %s\nnode log:\n%s", strings.Join(args, " "), err, errOut, n.log())
	}
	return out
}

// fail runs the CLI, expects it to fail, and returns its stderr.
func (n *node) fail(args ...string) string {
	n.t.Helper()
	out, errOut, err := n.try(args...)
	if err == nil {
		n.t.Fatalf("strata %s succeeded, want an error; stdout: %s", strings.Join(args, " "), out)
	}
	if strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		n.t.Errorf("strata %s: error is not one line: %q", strings.Join(args, " "), errOut)
	}
	return errOut
}

func (n *node) uri(vol string) string { return "nbd://" + n.nbd + "/" + vol }

// tool runs an external program and fails the test if it fails.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuIO runs qemu-io commands against an NBD URI; -P patterns verify reads.
func qemuIO(t *testing.T, uri string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := tool(t, "qemu-io", append(args, uri)...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
		t.Fatalf("qemu-io %v on %s:\n%s", cmds, uri, out)
	}
	return out
}
