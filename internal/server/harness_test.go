package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/agent"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/nbd"
	"github.com/strata-storage/strata/internal/replica"
)

const testToken = "test-token-0123456789"

// testNode is a whole single node (embedded etcd, agent with a real pool,
// NBD server, API server) in a directory, the way strata up wires it.
type testNode struct {
	t                  *testing.T
	dir                string
	etcdClient, etcdPr string
	meta               *meta.Store
	agent              *agent.Agent
	srv                *Server
	apiAddr, nbdAddr   string
	nbdCancel          context.CancelFunc
	nbdDone, apiDone   chan error
	conn               *grpc.ClientConn
	stopped            bool
	// cloneExpiry is the clone controller's period (the default when 0).
	cloneExpiry time.Duration

	// Cluster nodes (see newClusterNode): name ("node1" when empty), the
	// etcd of another node, heartbeat and replica timeout.
	name           string
	endpoints      []string
	heartbeat      time.Duration
	replicaTimeout time.Duration
	replaceAfter   time.Duration
	// The replica server, on a port kept across restarts.
	replAddr   string
	replCancel context.CancelFunc
	replDone   chan error
	presence   *meta.Presence
}

func freeURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("STRATA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newNode starts a node in a new directory.
func newNode(t *testing.T) *testNode {
	t.Helper()
	n := &testNode{t: t, dir: t.TempDir(), etcdClient: freeURL(t), etcdPr: freeURL(t)}
	n.start()
	t.Cleanup(func() { n.stop() })
	return n
}

// start starts (or restarts) the node on its directory.
func (n *testNode) start() {
	t := n.t
	t.Helper()
	ctx := context.Background()
	log := testLogger(t)
	var err error
	n.meta, err = meta.Open(ctx, meta.Config{Endpoints: n.endpoints, Dir: filepath.Join(n.dir, "etcd"), ClientURL: n.etcdClient, PeerURL: n.etcdPr, StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("meta: %v", err)
	}
	if _, err := n.meta.CreateToken(ctx, meta.HashToken(testToken), meta.RoleAdmin); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("token: %v", err)
	}
	n.agent, err = agent.Open(agent.Config{PoolDir: filepath.Join(n.dir, "pool"), FuseDir: filepath.Join(n.dir, "fuse"), Logger: log})
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nbdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.apiAddr, n.nbdAddr = apiLn.Addr().String(), nbdLn.Addr().String()
	if n.replAddr == "" {
		n.replAddr = strings.TrimPrefix(freeURL(t), "http://")
	}
	replLn, err := net.Listen("tcp", n.replAddr)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	n.replCancel, n.replDone = rcancel, make(chan error, 1)
	go func() { n.replDone <- replica.NewServer(n.agent.Pool(), n.agent.Epochs(), log).Serve(rctx, replLn) }()
	name := n.name
	if name == "" {
		name = "node1"
	}
	n.srv, err = New(ctx, Config{Meta: n.meta, Agent: n.agent, Node: name, APIAddr: n.apiAddr, NBDAddr: n.nbdAddr, ReplicaAddr: n.replAddr,
		Version: "test", Logger: log, Heartbeat: n.heartbeat, ReplicaTimeout: n.replicaTimeout, ReplaceAfter: n.replaceAfter,
		TemplateDir: filepath.Join(n.dir, "templates"), CloneExpiry: n.cloneExpiry})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := n.srv.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if n.presence, err = n.meta.KeepPresence(ctx, name, 2*time.Second, log); err != nil {
		t.Fatalf("presence: %v", err)
	}
	nctx, cancel := context.WithCancel(ctx)
	n.nbdCancel = cancel
	n.nbdDone = make(chan error, 1)
	go func() { n.nbdDone <- nbd.NewServer(n.agent.Exports()).Serve(nctx, nbdLn) }()
	n.apiDone = make(chan error, 1)
	go func() { n.apiDone <- n.srv.Serve(apiLn) }()
	n.conn, err = grpc.NewClient(n.apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.stopped = false
}

// stop stops the node the way strata up does on SIGTERM.
func (n *testNode) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	t := n.t
	n.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Errorf("api shutdown: %v", err)
	}
	if err := <-n.apiDone; err != nil {
		t.Errorf("api serve: %v", err)
	}
	n.nbdCancel()
	select {
	case <-n.nbdDone:
	case <-time.After(10 * time.Second):
		t.Errorf("nbd server did not stop")
	}
	n.replCancel()
	select {
	case <-n.replDone:
	case <-time.After(10 * time.Second):
		t.Errorf("replica server did not stop")
	}
	if err := n.agent.Close(); err != nil {
		t.Errorf("agent close: %v", err)
	}
	if n.presence != nil {
		n.presence.Close()
	}
	if err := n.meta.Close(); err != nil {
		t.Errorf("meta close: %v", err)
	}
}

func (n *testNode) restart() {
	n.t.Helper()
	n.stop()
	n.start()
}

func authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
}

func (n *testNode) vols() pb.VolumeServiceClient     { return pb.NewVolumeServiceClient(n.conn) }
func (n *testNode) snaps() pb.SnapshotServiceClient  { return pb.NewSnapshotServiceClient(n.conn) }
func (n *testNode) cluster() pb.ClusterServiceClient { return pb.NewClusterServiceClient(n.conn) }

// wantCode fails the test unless err has gRPC code c.
func wantCode(t *testing.T, what string, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("%s: got %v, want code %v", what, err, c)
	}
	if err != nil {
		msg := status.Convert(err).Message()
		if strings.Contains(msg, "\n") || msg == "" {
			t.Fatalf("%s: message %q is not one line", what, msg)
		}
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// rest makes a REST call on the node's API port and decodes the JSON answer
// into out (when not nil); it returns the HTTP status.
func (n *testNode) rest(method, path, token string, body any, out any) int {
	t := n.t
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.apiAddr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// nbdClient is a minimal NBD client: fixed newstyle, NBD_OPT_GO, simple replies.
type nbdClient struct {
	c      net.Conn
	size   int64
	handle uint64
}

const (
	nbdOptMagic   = 0x49484156454F5054
	nbdReplyMagic = 0x3e889045565a9
	nbdReqMagic   = 0x25609513
	nbdSimpleRep  = 0x67446698
)

// dialNBD connects to export name; a refused export is an error whose text
// carries the server's message.
func dialNBD(addr, name string) (*nbdClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fail := func(err error) (*nbdClient, error) { c.Close(); return nil, err }
	hdr := make([]byte, 18)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return fail(err)
	}
	if string(hdr[:8]) != "NBDMAGIC" || binary.BigEndian.Uint64(hdr[8:]) != nbdOptMagic {
		return fail(errors.New("nbd: bad greeting"))
	}
	// NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES
	if err := binary.Write(c, binary.BigEndian, uint32(3)); err != nil {
		return fail(err)
	}
	opt := new(bytes.Buffer)
	binary.Write(opt, binary.BigEndian, uint64(nbdOptMagic))
	binary.Write(opt, binary.BigEndian, uint32(7)) // NBD_OPT_GO
	binary.Write(opt, binary.BigEndian, uint32(4+len(name)+2))
	binary.Write(opt, binary.BigEndian, uint32(len(name)))
	opt.WriteString(name)
	binary.Write(opt, binary.BigEndian, uint16(0))
	if _, err := c.Write(opt.Bytes()); err != nil {
		return fail(err)
	}
	cl := &nbdClient{c: c}
	for {
		rh := make([]byte, 20)
		if _, err := io.ReadFull(c, rh); err != nil {
			return fail(err)
		}
		if binary.BigEndian.Uint64(rh) != nbdReplyMagic {
			return fail(errors.New("nbd: bad option reply magic"))
		}
		typ := binary.BigEndian.Uint32(rh[12:])
		data := make([]byte, binary.BigEndian.Uint32(rh[16:]))
		if _, err := io.ReadFull(c, data); err != nil {
			return fail(err)
		}
		switch {
		case typ == 1: // NBD_REP_ACK
			c.SetDeadline(time.Time{})
			return cl, nil
		case typ == 3 && len(data) >= 12 && binary.BigEndian.Uint16(data) == 0: // NBD_INFO_EXPORT
			cl.size = int64(binary.BigEndian.Uint64(data[2:]))
		case typ&0x80000000 != 0:
			return fail(fmt.Errorf("nbd: export %q refused (%#x): %s", name, typ, data))
		}
	}
}

func (cl *nbdClient) request(typ uint16, off int64, length uint32, payload []byte) ([]byte, error) {
	cl.handle++
	req := new(bytes.Buffer)
	binary.Write(req, binary.BigEndian, uint32(nbdReqMagic))
	binary.Write(req, binary.BigEndian, uint16(0))
	binary.Write(req, binary.BigEndian, typ)
	binary.Write(req, binary.BigEndian, cl.handle)
	binary.Write(req, binary.BigEndian, uint64(off))
	binary.Write(req, binary.BigEndian, length)
	req.Write(payload)
	cl.c.SetDeadline(time.Now().Add(20 * time.Second))
	defer cl.c.SetDeadline(time.Time{})
	if _, err := cl.c.Write(req.Bytes()); err != nil {
		return nil, err
	}
	rep := make([]byte, 16)
	if _, err := io.ReadFull(cl.c, rep); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(rep) != nbdSimpleRep || binary.BigEndian.Uint64(rep[8:]) != cl.handle {
		return nil, errors.New("nbd: bad reply")
	}
	if e := binary.BigEndian.Uint32(rep[4:]); e != 0 {
		return nil, fmt.Errorf("nbd: error %d", e)
	}
	if typ != 0 {
		return nil, nil
	}
	data := make([]byte, length)
	_, err := io.ReadFull(cl.c, data)
	return data, err
}

func (cl *nbdClient) ReadAt(off int64, n int) ([]byte, error) {
	return cl.request(0, off, uint32(n), nil)
}
func (cl *nbdClient) WriteAt(p []byte, off int64) error {
	_, err := cl.request(1, off, uint32(len(p)), p)
	return err
}
func (cl *nbdClient) Flush() error { _, err := cl.request(3, 0, 0, nil); return err }

// Close sends NBD_CMD_DISC and closes the connection.
func (cl *nbdClient) Close() error {
	cl.handle++
	req := new(bytes.Buffer)
	binary.Write(req, binary.BigEndian, uint32(nbdReqMagic))
	binary.Write(req, binary.BigEndian, uint16(0))
	binary.Write(req, binary.BigEndian, uint16(2))
	binary.Write(req, binary.BigEndian, cl.handle)
	binary.Write(req, binary.BigEndian, uint64(0))
	binary.Write(req, binary.BigEndian, uint32(0))
	cl.c.Write(req.Bytes())
	return cl.c.Close()
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
