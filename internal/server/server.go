// Package server is Strata's API server: the gRPC services of
// api/strata/v1 over the control-plane store (internal/meta, the desired
// state and the source of truth for what exists) and the node agent
// (internal/agent, which applies it on this node).
//
// One port serves gRPC (HTTP/2, unencrypted) and the REST/JSON gateway
// (HTTP/1.1 or HTTP/2), plus the OpenAPI description at GET /openapi.json.
// Every call needs a token ("authorization: Bearer TOKEN").
//
// Every operation that makes or removes something records its intent in
// etcd first (state "creating" or "deleting"), acts on the node, then
// records the outcome, so that a crash at any point leaves a state that
// Reconcile, run at startup, finishes or rolls back.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/strata-storage/strata/api"
	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/agent"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// Config wires the server to its store and agent.
type Config struct {
	Meta  *meta.Store
	Agent *agent.Agent
	// Node is this node's name, recorded on the volumes it holds.
	Node string
	// APIAddr and NBDAddr are the addresses clients reach this node's API
	// and NBD server at (host:port); ExportVolume's URI uses NBDAddr.
	APIAddr string
	NBDAddr string
	// ReplicaAddr is where other nodes reach this node's replica server,
	// recorded in the node record as Addresses["replica"].
	ReplicaAddr string
	// Labels of this node (zone, rack, ...).
	Labels  map[string]string
	Version string
	// Heartbeat is how often the node record is rewritten; 10s when 0.
	Heartbeat time.Duration
	Logger    *slog.Logger
	// TemplateDir keeps the logs of template builds (DATA_DIR/templates);
	// a directory under the system's temporary directory when empty.
	TemplateDir string
	// CloneExpiry is how often the clone controller looks for expired
	// clones; 30s when 0.
	CloneExpiry time.Duration
	// ReplicaTimeout is how long an engine waits for a replica's reply
	// before the replica leaves the in-sync set; DefaultReplicaTimeout
	// when 0.
	ReplicaTimeout time.Duration
	// ReplaceAfter is how long a replica may stay out before a new one is
	// built on another node; DefaultReplaceAfter when 0.
	ReplaceAfter time.Duration
}

// Server serves the API. Create it with New, run Reconcile, then Serve.
type Server struct {
	meta      *meta.Store
	agent     *agent.Agent
	node      string
	apiAddr   string
	nbdAddr   string
	replAddr  string
	labels    map[string]string
	version   string
	clusterID string
	heartbeat time.Duration
	log       *slog.Logger
	tokens    *tokenCache
	locks     keyedMutex

	// Templates and the clone controller (templates.go, clones.go).
	templateDir string
	started     time.Time
	stopClones  chan struct{}
	clonesDone  chan struct{}
	expiryMu    sync.Mutex
	inUseLogged map[string]bool

	// Replication (replication.go).
	repl           replEngines
	replicaTimeout time.Duration
	replaceAfter   time.Duration
	repairKick     chan struct{}
	stopRepair     chan struct{}
	repairDone     chan struct{}
	catchUpBytes   atomic.Int64
	// resyncCompared counts the bytes resyncs after engine crashes compared.
	resyncCompared atomic.Int64

	grpc   *grpc.Server
	gw     *runtime.ServeMux
	inproc *bufconn.Listener // the gateway's connection to s.grpc
	gwConn *grpc.ClientConn

	mu      sync.Mutex
	http    *http.Server
	stopHB  chan struct{}
	hbDone  chan struct{}
	closing bool

	pb.UnimplementedVolumeServiceServer
	pb.UnimplementedSnapshotServiceServer
	pb.UnimplementedClusterServiceServer
	pb.UnimplementedUserServiceServer
	pb.UnimplementedSecretServiceServer
	pb.UnimplementedTemplateServiceServer
	pb.UnimplementedCloneServiceServer
}

// New makes the server, its gRPC services and their REST gateway, and
// registers this node in etcd.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Meta == nil || cfg.Agent == nil || cfg.Node == "" {
		return nil, fmt.Errorf("server: meta, agent and node name are required: %w", errdefs.ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	id, err := cfg.Meta.ClusterID(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: cluster id: %w", err)
	}
	s := &Server{
		meta:      cfg.Meta,
		agent:     cfg.Agent,
		node:      cfg.Node,
		apiAddr:   cfg.APIAddr,
		nbdAddr:   cfg.NBDAddr,
		replAddr:  cfg.ReplicaAddr,
		labels:    cfg.Labels,
		version:   cfg.Version,
		clusterID: id,
		heartbeat: cfg.Heartbeat,
		log:       log,
		tokens:    &tokenCache{store: cfg.Meta},
		stopHB:    make(chan struct{}),
		hbDone:    make(chan struct{}),
	}
	if s.heartbeat == 0 {
		s.heartbeat = 10 * time.Second
	}
	s.replicaTimeout, s.replaceAfter = cfg.ReplicaTimeout, cfg.ReplaceAfter
	if s.replicaTimeout == 0 {
		s.replicaTimeout = DefaultReplicaTimeout
	}
	if s.replaceAfter == 0 {
		s.replaceAfter = DefaultReplaceAfter
	}
	s.repairKick = make(chan struct{}, 1)
	if s.version == "" {
		s.version = "dev"
	}
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(s.unary))
	pb.RegisterVolumeServiceServer(s.grpc, s)
	pb.RegisterSnapshotServiceServer(s.grpc, s)
	pb.RegisterClusterServiceServer(s.grpc, s)
	pb.RegisterUserServiceServer(s.grpc, s)
	pb.RegisterSecretServiceServer(s.grpc, s)
	pb.RegisterTemplateServiceServer(s.grpc, s)
	pb.RegisterCloneServiceServer(s.grpc, s)

	// The gateway calls the gRPC server through an in-process connection,
	// so REST calls take the same path as gRPC ones: the same interceptor
	// authenticates them and maps their errors.
	s.inproc = bufconn.Listen(1 << 20)
	go s.grpc.Serve(s.inproc)
	s.gwConn, err = grpc.NewClient("passthrough:///strata-inproc",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.grpc.Stop()
		return nil, fmt.Errorf("server: gateway connection: %w", err)
	}
	s.gw = runtime.NewServeMux()
	for _, reg := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		pb.RegisterVolumeServiceHandler, pb.RegisterSnapshotServiceHandler, pb.RegisterClusterServiceHandler,
		pb.RegisterUserServiceHandler, pb.RegisterSecretServiceHandler,
		pb.RegisterTemplateServiceHandler, pb.RegisterCloneServiceHandler,
	} {
		if err := reg(context.WithoutCancel(ctx), s.gw, s.gwConn); err != nil {
			s.gwConn.Close()
			s.grpc.Stop()
			return nil, fmt.Errorf("server: gateway: %w", err)
		}
	}
	cfg.Agent.SetExportGate(s.exportable)
	if err := s.beat(ctx); err != nil {
		s.gwConn.Close()
		s.grpc.Stop()
		return nil, fmt.Errorf("server: register node %q: %w", s.node, err)
	}
	go s.heartbeatLoop()
	s.started, s.templateDir = time.Now(), cfg.TemplateDir
	if s.templateDir == "" {
		s.templateDir = filepath.Join(os.TempDir(), "strata-templates")
	}
	interval := cfg.CloneExpiry
	if interval == 0 {
		interval = 30 * time.Second
	}
	s.stopClones, s.clonesDone = make(chan struct{}), make(chan struct{})
	go s.cloneControllerLoop(interval, s.stopClones, s.clonesDone)
	cfg.Agent.SetEngineStarter(s)
	s.stopRepair, s.repairDone = make(chan struct{}), make(chan struct{})
	go s.repairLoop(s.stopRepair, s.repairDone)
	return s, nil
}

// exportable is the agent's NBD export gate: only volumes recorded as
// ready on this node are served.
func (s *Server) exportable(ctx context.Context, name string) error {
	rec, err := s.readyVolume(ctx, name)
	if err != nil {
		return err
	}
	if rec.Node != s.node {
		return fmt.Errorf("volume %q lives on node %s: %w", name, rec.Node, errdefs.ErrNotFound)
	}
	return nil
}

// Handler routes gRPC requests (HTTP/2, content-type application/grpc) to
// the gRPC server, GET /openapi.json to the API description, and everything
// else to the REST gateway.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/openapi.json" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(api.OpenAPI)
			return
		}
		s.gw.ServeHTTP(w, r)
	})
}

// Serve serves the API on ln until Shutdown; it returns nil after a
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           s.Handler(),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.http = hs
	s.mu.Unlock()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting calls, waits (until ctx is done) for the calls
// under way, and stops the heartbeat. It does not close the store or agent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	hs := s.http
	s.mu.Unlock()
	var err error
	if hs != nil {
		err = hs.Shutdown(ctx)
	}
	close(s.stopHB)
	<-s.hbDone
	close(s.stopClones)
	<-s.clonesDone
	close(s.stopRepair)
	<-s.repairDone
	s.gwConn.Close()
	s.grpc.Stop()
	return err
}

// beat rewrites this node's record with its addresses and pool space.
func (s *Server) beat(ctx context.Context) error {
	n := meta.Node{
		Name:      s.node,
		Addresses: map[string]string{"api": s.apiAddr, "nbd": s.nbdAddr},
		Labels:    s.labels,
		Heartbeat: time.Now().UTC(),
	}
	if s.replAddr != "" {
		n.Addresses["replica"] = s.replAddr
	}
	if u, err := s.agent.Usage(); err == nil {
		n.PoolCapacity, n.PoolAvailable, n.PoolAllocated = u.Capacity, u.Available, u.Allocated
	}
	_, err := s.meta.PutNode(ctx, n)
	return err
}

func (s *Server) heartbeatLoop() {
	defer close(s.hbDone)
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stopHB:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.heartbeat)
			if err := s.beat(ctx); err != nil {
				s.log.Warn("heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}

// keyedMutex serializes the operations on each volume name.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	sync.Mutex
	refs int
}

// lock takes the locks of names in sorted order (so that two callers never
// deadlock) and returns the function that releases them.
func (k *keyedMutex) lock(names ...string) func() {
	sorted := slices.Compact(slices.Sorted(slices.Values(names)))
	var held []string
	for _, n := range sorted {
		k.mu.Lock()
		if k.m == nil {
			k.m = map[string]*keyedEntry{}
		}
		e := k.m[n]
		if e == nil {
			e = &keyedEntry{}
			k.m[n] = e
		}
		e.refs++
		k.mu.Unlock()
		e.Lock()
		held = append(held, n)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			k.mu.Lock()
			e := k.m[held[i]]
			e.refs--
			if e.refs == 0 {
				delete(k.m, held[i])
			}
			k.mu.Unlock()
			e.Unlock()
		}
	}
}

// detach returns a context that outlives the caller's cancellation (but not
// its values), bounded by timeout: once an operation has started changing
// things it finishes them, or undoes them, even if the client goes away.
func detach(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}

// opTimeout bounds a mutating operation once started.
const opTimeout = 2 * time.Minute
