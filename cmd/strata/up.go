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
	"github.com/strata-storage/strata/internal/atomicfile"
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
	replicaAddr   string // 127.0.0.1:0 when empty
	etcdEndpoints []string
	etcdClientURL string
	etcdPeerURL   string
	nodeName      string
	configPath    string
	logLevel      string
	labels        map[string]string
	debugAddr     string

	// ip, when set, gives every address flag the user did not set its
	// default port on ip (see applyIP).
	ip string
	// labelList are the --label KEY=VALUE flags, merged into labels.
	labelList []string
	// join is the API address of a node of the cluster to join, with
	// joinToken (see up_join.go).
	join      string
	joinToken string
	// nodeTTL is the TTL of the node's presence lease (meta.DefaultNodeTTL when 0).
	nodeTTL time.Duration

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
server, the replica server, and the API (gRPC and REST/JSON on one port).

The first node founds a cluster. More nodes join it with --join API-ADDRESS
--join-token TOKEN (` + "`" + `strata cluster token` + "`" + ` prints the token): the first
three nodes run embedded etcd members, so that the cluster survives the loss
of one of them; later nodes are etcd clients. A node that joined restarts
without --join. On several machines, give each node its address with --ip:
every service then listens on it (API :7420, NBD :10809, etcd client :7421
and peer :7422, replica :7425). See docs/cluster.md.

Data lives under --data-dir:
  etcd/         the embedded etcd member (its log is etcd/etcd.log)
  pool/         the volumes' layers
  fuse/         FUSE state of mounted volumes
  templates/    logs of the builds of template versions
  admin.token   the admin API token (mode 0600)
  cluster.json  how this node joined its cluster (nodes started with --join)

On every start the client config (API address and admin token) is written to
` + "`" + `--config` + "`" + ` so that the other strata commands work right away.
Ctrl-C or SIGTERM stops the node cleanly: calls under way finish, volumes
mounted by this node are unmounted, engines are flushed, etcd is stopped.`,
		Example: `  strata up
  strata up --ip 10.0.0.1 --label zone=a --label rack=r1
  strata up --ip 10.0.0.2 --label zone=b --join 10.0.0.1:7420 --join-token TOKEN`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyIP(cmd.Flags(), &o); err != nil {
				return err
			}
			labels, err := mergeLabels(o.labels, o.labelList)
			if err != nil {
				return err
			}
			o.labels = labels
			if o.joinToken == "" {
				o.joinToken = os.Getenv(envJoinToken)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runUp(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the node's data (etcd, pool, fuse state, admin token)")
	f.StringVar(&o.ip, "ip", "", "listen on and advertise this IP address for every service, with the default ports (API :"+defaultAPIPort+", NBD :"+defaultNBDPort+", etcd client :"+defaultEtcdClientPort+" and peer :"+defaultEtcdPeerPort+", replica :"+defaultReplicaPort+"); the address flags given explicitly win")
	f.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:"+defaultAPIPort, "address of the API (gRPC and REST/JSON)")
	f.StringVar(&o.nbdAddr, "nbd-addr", "127.0.0.1:"+defaultNBDPort, "address of the NBD server")
	f.StringVar(&o.replicaAddr, "replica-addr", "127.0.0.1:"+defaultReplicaPort, "address of the replica server, which the other nodes send replicated writes to")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "use this external etcd cluster (comma-separated client URLs) instead of an embedded member")
	f.StringVar(&o.etcdClientURL, "etcd-client-url", meta.DefaultClientURL, "client URL of the embedded etcd member (no TLS, no auth: loopback, or a network only the cluster's nodes reach)")
	f.StringVar(&o.etcdPeerURL, "etcd-peer-url", meta.DefaultPeerURL, "peer URL of the embedded etcd member (no TLS, no auth: loopback, or a network only the cluster's nodes reach)")
	f.StringVar(&o.join, "join", "", "join the cluster whose node API is at this `host:port` (first start only; needs --join-token)")
	f.StringVar(&o.joinToken, "join-token", "", "the cluster's join `token`, from `strata cluster token` (default $"+envJoinToken+")")
	f.DurationVar(&o.nodeTTL, "node-ttl", meta.DefaultNodeTTL, "how long the node stays online in the cluster's eyes after it last reached etcd")
	_ = f.MarkHidden("node-ttl")
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
	f.StringArrayVar(&o.labelList, "label", nil, "a label of this node, `KEY=VALUE`, e.g. --label zone=a --label rack=r1 (repeatable; placement spreads replicas over zones and racks)")
	f.StringToStringVar(&o.labels, "labels", nil, "labels of this node, comma-separated, e.g. zone=a,rack=r1 (same as several --label)")
	return cmd
}

// node is a running Strata node; up starts one, stop stops it.
type node struct {
	log      *slog.Logger
	meta     *meta.Store
	presence *meta.Presence
	agent    *agent.Agent
	api      *server.Server
	apiLn    net.Listener
	nbdLn    net.Listener
	nbdStop  context.CancelFunc
	nbdDone  chan error
	apiDone  chan error
	token    string
	debug    *http.Server
	apiAddr  string // advertised
	nbdAddr  string // advertised
	// replicaLn is the replica server's listener, opened first like the
	// others so that a port in use fails fast; stop closes it.
	replicaLn   net.Listener
	replicaAddr string // advertised
	// replicaSrv serves this node's pool to other nodes' engines on
	// replicaLn (up_replica.go).
	replicaSrv replicaService
	// membership is how this node joined its cluster; nil for a node
	// that founded it, or that uses an external etcd.
	membership *meta.Membership
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
	replicaAddr := o.replicaAddr
	if replicaAddr == "" {
		replicaAddr = "127.0.0.1:0"
	}
	if n.replicaLn, err = net.Listen("tcp", replicaAddr); err != nil {
		return nil, fmt.Errorf("replica: %w (choose another port with --replica-addr)", err)
	}
	n.apiAddr = advertised(n.apiLn.Addr())
	n.nbdAddr = advertised(n.nbdLn.Addr())
	n.replicaAddr = advertised(n.replicaLn.Addr())

	// How this node reaches etcd: its own member (founded or joined),
	// the endpoints it joined as a client, or an external etcd.
	mcfg, membership, err := storeConfig(ctx, o, log)
	if err != nil {
		return nil, err
	}
	n.membership = membership
	log.Info("starting etcd", "dir", mcfg.Dir, "endpoints", mcfg.Endpoints, "joining", mcfg.InitialCluster)
	n.meta, err = meta.Open(ctx, mcfg)
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			err = fmt.Errorf("%w (is another strata up running? choose other ports with --etcd-client-url and --etcd-peer-url, or another --ip)", err)
		}
		return nil, err
	}
	if err := checkCluster(ctx, o, n.meta, membership); err != nil {
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

		ReplicaAddr: n.replicaAddr,

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
	// Online from here until stop, or until etcd stops hearing from us.
	if n.presence, err = n.meta.KeepPresence(ctx, o.nodeName, o.nodeTTL, log); err != nil {
		return nil, err
	}

	nbdCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.nbdStop = cancel
	n.nbdDone = make(chan error, 1)
	srv := nbd.NewServer(n.agent.Exports())
	nbdLn := n.nbdLn
	go func() { n.nbdDone <- srv.Serve(nbdCtx, nbdLn) }()
	n.serveReplicas(ctx)

	if o.debugAddr != "" {
		if n.debug, err = serveDebug(o.debugAddr, log); err != nil {
			return nil, err
		}
	}

	n.apiDone = make(chan error, 1)
	api, apiLn := n.api, n.apiLn
	go func() { n.apiDone <- api.Serve(apiLn) }()
	log.Info("strata node is up", "node", o.nodeName, "api", n.apiAddr, "nbd", n.nbdAddr, "replica", n.replicaAddr,
		"etcd", etcdRole(n.meta), "data", o.dataDir, "attach", n.agent.AttachMethod())
	return n, nil
}

// stop stops what startNode started, in reverse: the node goes offline,
// the API stops (calls under way finish), the NBD server (connections
// end), the replica listener, the agent (mounts it made are unmounted,
// engines flushed, pool closed), then etcd.
func (n *node) stop() error {
	var errs []error
	if n.presence != nil {
		n.presence.Close()
	}
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
	if err := n.stopReplicas(); err != nil {
		errs = append(errs, err)
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
		if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
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

func printNextSteps(out io.Writer, o upOptions, n *node) {
	fmt.Fprintf(out, `Strata node %q is up.
  API      %s (gRPC and REST/JSON; OpenAPI at http://%s/openapi.json)
  NBD      %s
  replica  %s
  etcd     %s
  data     %s
  client config written to %s
`, o.nodeName, n.apiAddr, n.apiAddr, n.nbdAddr, n.replicaAddr, etcdRole(n.meta), o.dataDir, o.configPath)
	if n.membership == nil && !n.meta.External() {
		fmt.Fprintf(out, `
Add nodes: print the join token with `+"`strata cluster token`"+`, then start each new node with
  strata up --ip ITS-IP --join %s --join-token TOKEN
`, n.apiAddr)
	}
	fmt.Fprintf(out, `
Next:
  strata volume create demo --size 1GiB
  strata volume export demo              # prints nbd://%s/demo
  qemu-img info nbd://%s/demo
  strata volume mount demo /mnt/demo    # needs a node started as root (loop devices)

Press Ctrl-C to stop the node.
`, n.nbdAddr, n.nbdAddr)
}
