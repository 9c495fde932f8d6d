package dockerplugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
)

// strataNode is a `strata up` subprocess with its own data directory, ports
// and client config, so that it never meets a real installation.
type strataNode struct {
	t       *testing.T
	bin     string
	dataDir string
	config  string
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// freePorts returns n TCP ports free on 127.0.0.1 now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// buildStrata builds the strata binary of this tree.
func buildStrata(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "strata")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/strata-storage/strata/cmd/strata").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/strata: %v\n%s", err, out)
	}
	return bin
}

func startNode(t *testing.T) *strataNode {
	t.Helper()
	dir := t.TempDir()
	p := freePorts(t, 4)
	n := &strataNode{
		t:       t,
		bin:     buildStrata(t),
		dataDir: filepath.Join(dir, "data"),
		config:  filepath.Join(dir, "config", "strata", "config.yaml"),
		logPath: filepath.Join(dir, "node.log"),
	}
	n.args = []string{"up",
		"--data-dir", n.dataDir,
		"--config", n.config,
		"--node-name", "dockertest",
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", p[0]),
		"--nbd-addr", fmt.Sprintf("127.0.0.1:%d", p[1]),
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", p[2]),
		"--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", p[3]),
	}
	n.start()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			if b, err := os.ReadFile(n.logPath); err == nil {
				t.Logf("node log:\n%s", b)
			}
		}
	})
	return n
}

func (n *strataNode) start() {
	n.t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.t.Fatal(err)
	}
	defer logf.Close()
	os.Remove(n.config)
	n.cmd = exec.Command(n.bin, n.args...)
	n.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Dir(filepath.Dir(n.config)))
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(n.cmd, n.exited)
}

// stop stops the node the way an operator does (SIGTERM) and waits.
func (n *strataNode) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(60 * time.Second):
		n.t.Errorf("strata up did not stop within 60s of SIGTERM; killing it")
		n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

// kill kills the node, as a crash does.
func (n *strataNode) kill() {
	n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

// dial waits until the node serves its API and returns a client.
func (n *strataNode) dial() *client.Client {
	n.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-n.exited:
			b, _ := os.ReadFile(n.logPath)
			n.t.Fatalf("strata up exited:\n%s", b)
		default:
		}
		if cfg, err := client.LoadConfig(n.config); err == nil {
			c, err := client.Dial(context.Background(), cfg.API, cfg.Token)
			if err != nil {
				n.t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = c.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
			cancel()
			if err == nil {
				return c
			}
			c.Close()
			if time.Now().After(deadline) {
				n.t.Fatalf("node API not ready: %v", err)
			}
		} else if time.Now().After(deadline) {
			n.t.Fatalf("node wrote no client config: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDockerEngineNode is the end-to-end test: a real Docker engine,
// the plugin, and a real single-node Strata (FUSE file, loop device, ext4).
func TestDockerEngineNode(t *testing.T) {
	requireDocker(t)
	if testing.Short() {
		t.Skip("-short: builds and starts a strata node")
	}
	n := startNode(t)
	c := n.dial()
	t.Cleanup(func() { c.Close() })
	e := startPlugin(t, "node", Backend{Volumes: c.Volumes, Snapshots: c.Snapshots}, filepath.Join(t.TempDir(), "docker-mounts"), nil)
	runDockerSuite(t, e, func(crash bool) {
		if crash {
			t.Log("killing the strata node (SIGKILL) and starting it again")
			n.kill()
		} else {
			t.Log("restarting the strata node")
			n.stop()
		}
		n.start()
		c2 := n.dial() // waits for the API; the plugin's client reconnects by itself
		c2.Close()
	})
}
