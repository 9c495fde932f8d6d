package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/agent"
	"github.com/strata-storage/strata/internal/csi"
	"github.com/strata-storage/strata/internal/dockerplugin"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/nbd"
	"github.com/strata-storage/strata/internal/server"
)

// upOptions are the flags of `strata up`.
type upOptions struct {
	dataDir       string
	apiAddr       string
	nbdAddr       string
	etcdEndpoints []string
	etcdClientURL string
	etcdPeerURL   string
	nodeName      string
	configPath    string
	logLevel      string
	labels        map[string]string
	debugAddr     string

	dockerPlugin       bool
	dockerPluginSocket string

	schedulerExtenderAddr string

	cloneCheck time.Duration

	csiEndpoint string

	attach string
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/strata"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "strata")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(".local", "share", "strata")
	}
	return filepath.Join(home, ".local", "share", "strata")
}

func newUpCmd() *cobra.Command {
	o := upOptions{}
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a Strata node",
		Long: `Start a Strata node: the control-plane store (an embedded etcd member, or
external etcd with --etcd-endpoints), the node agent and its pool, the NBD
server, and the API (gRPC and REST/JSON on one port).

Data lives under --data-dir:
  etcd/         the embedded etcd member (its log is etcd/etcd.log)
  pool/         the volumes' layers
  fuse/         FUSE state of mounted volumes
  templates/    logs of the builds of template versions
  admin.token   the admin API token (mode 0600)

On every start the client config (API address and admin token) is written to
` + "`" + `--config` + "`" + ` so that the other strata commands work right away.
Ctrl-C or SIGTERM stops the node cleanly: calls under way finish, volumes
mounted by this node are unmounted, engines are flushed, etcd is stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runUp(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the node's data (etcd, pool, fuse state, admin token)")
	f.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:7420", "address of the API (gRPC and REST/JSON)")
	f.StringVar(&o.nbdAddr, "nbd-addr", "127.0.0.1:10809", "address of the NBD server")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "use this external etcd cluster (comma-separated client URLs) instead of an embedded member")
	f.StringVar(&o.etcdClientURL, "etcd-client-url", meta.DefaultClientURL, "client URL of the embedded etcd member (keep it on loopback)")
	f.StringVar(&o.etcdPeerURL, "etcd-peer-url", meta.DefaultPeerURL, "peer URL of the embedded etcd member (keep it on loopback)")
	f.StringVar(&o.nodeName, "node-name", host, "this node's name in the cluster")
	f.StringVar(&o.configPath, "config", client.DefaultConfigPath(), "client config file to write (API address and admin token)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&o.dockerPlugin, "docker-plugin", false, "serve Docker's volume plugin protocol (docker volume create -d strata); needs root, see docs/docker.md")
	f.StringVar(&o.dockerPluginSocket, "docker-plugin-socket", dockerplugin.DefaultSocket, "unix socket of the Docker volume plugin; Docker names the driver after the file (strata.sock: driver strata)")
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:7429 (off when empty; keep it on loopback)")
	f.StringVar(&o.schedulerExtenderAddr, "scheduler-extender-addr", "", "serve the Kubernetes scheduler extender (POST /filter and /prioritize) on this address, e.g. :7423 (off when empty; see docs/kubernetes.md)")
	f.StringVar(&o.csiEndpoint, "csi-endpoint", "", "serve the CSI driver "+csi.DriverName+" (Identity, Controller and Node services) on this unix socket, e.g. unix:///var/lib/kubelet/plugins/strata.csi.io/csi.sock (off when empty; needs root, see docs/kubernetes.md)")
	f.DurationVar(&o.cloneCheck, "clone-check-interval", 30*time.Second, "how often the clone controller deletes expired clones")
	f.StringVar(&o.attach, "attach", agent.AttachAuto, "how volumes are made block devices of this node for mounts and maps: nbd (the kernel's NBD client, /dev/nbdN), fuse (a FUSE file and a loop device), or auto (nbd when the kernel has the nbd module, else fuse)")
	f.StringToStringVar(&o.labels, "labels", nil, "labels of this node, e.g. zone=a,rack=r1 (for placement across failure domains)")
	return cmd
}

// node is a running Strata node; up starts one, stop stops it.
type node struct {
	log     *slog.Logger
	meta    *meta.Store
	agent   *agent.Agent
	api     *server.Server
	apiLn   net.Listener
	nbdLn   net.Listener
	nbdStop context.CancelFunc
	nbdDone chan error
	apiDone chan error
	token   string
	debug   *http.Server
	apiAddr string // advertised
	nbdAddr string // advertised
}

func runUp(ctx context.Context, o upOptions, out io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	n, err := startNode(ctx, o, log)
	if err != nil {
		return err
	}
	if err := client.SaveConfig(o.configPath, client.Config{API: n.apiAddr, Token: n.token}); err != nil {
		log.Warn("could not write the client config; pass --api and --token to the strata commands", "path", o.configPath, "err", err)
	}
	printNextSteps(out, o, n)

	var pluginDone chan error
	stopPlugin := func() {}
	if o.dockerPlugin {
		c, err := client.Dial(ctx, n.apiAddr, n.token)
		if err != nil {
			return errors.Join(fmt.Errorf("docker plugin: %w", err), n.stop())
		}
		defer c.Close()
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		pluginDone = make(chan error, 1)
		go func() {
			pluginDone <- dockerplugin.Serve(pctx, o.dockerPluginSocket,
				dockerplugin.Backend{Volumes: c.Volumes, Snapshots: c.Snapshots, Conn: c.Conn()},
				dockerplugin.Options{MountRoot: filepath.Join(o.dataDir, "docker-mounts"), Logger: log})
		}()
		fmt.Fprintf(out, "Docker volume plugin on %s: docker volume create -d %s NAME -o size=10GiB\n",
			o.dockerPluginSocket, strings.TrimSuffix(filepath.Base(o.dockerPluginSocket), ".sock"))
		stopPlugin = func() {
			cancel()
			if err := <-pluginDone; err != nil {
				log.Warn("docker plugin", "err", err)
			}
		}
	}

	var extenderDone chan error
	stopExtender := func() {}
	if o.schedulerExtenderAddr != "" {
		if extenderDone, stopExtender, err = serveSchedulerExtender(ctx, o.schedulerExtenderAddr, n, log); err != nil {
			stopPlugin()
			return errors.Join(err, n.stop())
		}
		fmt.Fprintf(out, "Kubernetes scheduler extender on %s (POST /filter, /prioritize)\n", o.schedulerExtenderAddr)
	}

	var csiDone chan error
	stopCSI := func() {}
	if o.csiEndpoint != "" {
		if csiDone, stopCSI, err = serveCSI(ctx, o.csiEndpoint, o.nodeName, n, log); err != nil {
			stopExtender()
			stopPlugin()
			return errors.Join(err, n.stop())
		}
		fmt.Fprintf(out, "CSI driver %s on %s\n", csi.DriverName, o.csiEndpoint)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-n.apiDone:
		runErr = fmt.Errorf("api server: %w", err)
	case err := <-n.nbdDone:
		runErr = fmt.Errorf("nbd server: %w", err)
	case err := <-pluginDone:
		pluginDone <- err // for stopPlugin
		runErr = fmt.Errorf("docker plugin: %w", err)
	case err := <-extenderDone:
		extenderDone <- err // for stopExtender
		runErr = fmt.Errorf("scheduler extender: %w", err)
	case err := <-csiDone:
		csiDone <- err // for stopCSI
		runErr = fmt.Errorf("csi driver: %w", err)
	}
	stopCSI()
	stopExtender()
	stopPlugin()
	return errors.Join(runErr, n.stop())
}

// startNode starts the store, the agent, the API and the NBD server.
func startNode(ctx context.Context, o upOptions, log *slog.Logger) (_ *node, retErr error) {
	if o.nodeName == "" {
		return nil, errors.New("--node-name must not be empty")
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n := &node{log: log}
	defer func() {
		if retErr != nil {
			n.stop()
		}
	}()
	// Listen first: a port in use fails fast, before etcd starts.
	var err error
	if n.apiLn, err = net.Listen("tcp", o.apiAddr); err != nil {
		return nil, fmt.Errorf("api: %w (is another strata up running? choose another port with --api-addr)", err)
	}
	if n.nbdLn, err = net.Listen("tcp", o.nbdAddr); err != nil {
		return nil, fmt.Errorf("nbd: %w (choose another port with --nbd-addr)", err)
	}
	n.apiAddr = advertised(n.apiLn.Addr())
	n.nbdAddr = advertised(n.nbdLn.Addr())

	log.Info("starting etcd", "dir", filepath.Join(o.dataDir, "etcd"), "endpoints", o.etcdEndpoints)
	n.meta, err = meta.Open(ctx, meta.Config{
		Endpoints: o.etcdEndpoints,
		Dir:       filepath.Join(o.dataDir, "etcd"),
		Name:      o.nodeName,
		ClientURL: o.etcdClientURL,
		PeerURL:   o.etcdPeerURL,
	})
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			err = fmt.Errorf("%w (is another strata up running? choose other ports with --etcd-client-url and --etcd-peer-url)", err)
		}
		return nil, err
	}
	if n.token, err = adminToken(ctx, o.dataDir, n.meta); err != nil {
		return nil, err
	}
	n.agent, err = agent.Open(agent.Config{
		PoolDir: filepath.Join(o.dataDir, "pool"),
		FuseDir: filepath.Join(o.dataDir, "fuse"),
		Attach:  o.attach,
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}
	n.api, err = server.New(ctx, server.Config{
		Meta:    n.meta,
		Agent:   n.agent,
		Node:    o.nodeName,
		APIAddr: n.apiAddr,
		NBDAddr: n.nbdAddr,
		Labels:  o.labels,
		Version: version,
		Logger:  log,

		TemplateDir: filepath.Join(o.dataDir, "templates"),
		CloneExpiry: o.cloneCheck,
	})
	if err != nil {
		return nil, err
	}
	if err := n.api.Reconcile(ctx); err != nil {
		// What could not be reconciled is logged; the rest of the node works.
		log.Warn("startup reconciliation left work undone", "err", err)
	}

	nbdCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.nbdStop = cancel
	n.nbdDone = make(chan error, 1)
	srv := nbd.NewServer(n.agent.Exports())
	nbdLn := n.nbdLn
	go func() { n.nbdDone <- srv.Serve(nbdCtx, nbdLn) }()

	if o.debugAddr != "" {
		if n.debug, err = serveDebug(o.debugAddr, log); err != nil {
			return nil, err
		}
	}

	n.apiDone = make(chan error, 1)
	api, apiLn := n.api, n.apiLn
	go func() { n.apiDone <- api.Serve(apiLn) }()
	log.Info("strata node is up", "node", o.nodeName, "api", n.apiAddr, "nbd", n.nbdAddr, "data", o.dataDir, "attach", n.agent.AttachMethod())
	return n, nil
}

// stop stops what startNode started, in reverse: the API (calls under way
// finish), the NBD server (connections end), the agent (mounts it made are
// unmounted, engines flushed, pool closed), then etcd.
func (n *node) stop() error {
	var errs []error
	if n.debug != nil {
		n.debug.Close()
	}
	if n.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := n.api.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("api: %w", err))
		}
		cancel()
	} else if n.apiLn != nil {
		n.apiLn.Close()
	}
	if n.nbdStop != nil {
		n.nbdStop()
		n.nbdLn.Close()
		select {
		case <-n.nbdDone:
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("nbd: connections did not end within 30s"))
		}
	} else if n.nbdLn != nil {
		n.nbdLn.Close()
	}
	if n.agent != nil {
		if err := n.agent.Close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: %w", err))
		}
	}
	if n.meta != nil {
		if err := n.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("etcd: %w", err))
		}
	}
	return errors.Join(errs...)
}

// advertised is the address clients use to reach a listener: a wildcard
// host becomes 127.0.0.1.
func advertised(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// adminToken returns the admin token, making it on first start: 32 random
// bytes, hex. The token itself is kept in DATA_DIR/admin.token (0600) so
// that later starts can rewrite the client config; etcd stores only its
// SHA-256. The file is written before the hash is stored, so a crash in
// between is finished by the next start.
func adminToken(ctx context.Context, dataDir string, store *meta.Store) (string, error) {
	path := filepath.Join(dataDir, "admin.token")
	b, err := os.ReadFile(path)
	var token string
	switch {
	case err == nil:
		token = strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("%s is empty: remove it to make a new admin token", path)
		}
	case errors.Is(err, os.ErrNotExist):
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		token = hex.EncodeToString(raw)
		if err := writeFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("admin token: %w", err)
		}
	default:
		return "", fmt.Errorf("admin token: %w", err)
	}
	if _, err := store.CreateToken(ctx, meta.HashToken(token), meta.RoleAdmin); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return token, nil
}

// writeFileAtomic writes a file crash-safely: temp file, fsync, rename,
// fsync of the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func printNextSteps(out io.Writer, o upOptions, n *node) {
	fmt.Fprintf(out, `Strata node %q is up.
  API    %s (gRPC and REST/JSON; OpenAPI at http://%s/openapi.json)
  NBD    %s
  data   %s
  client config written to %s

Next:
  strata volume create demo --size 1GiB
  strata volume export demo              # prints nbd://%s/demo
  qemu-img info nbd://%s/demo
  strata volume mount demo /mnt/demo    # needs a node started as root (loop devices)

Press Ctrl-C to stop the node.
`, o.nodeName, n.apiAddr, n.apiAddr, n.nbdAddr, o.dataDir, o.configPath, n.nbdAddr, n.nbdAddr)
}
