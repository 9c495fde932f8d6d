package e2e

// The harness of the replication fault tests (replication_test.go): a
// three-node cluster of real `strata up` processes on 127.0.57.1-3, which
// the tests kill with SIGKILL and restart, and a writer that issues NBD
// writes of self-describing blocks and records which were acknowledged and
// which were made durable by a flush, so that what reads back can be
// judged block by block.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/nbd"
)

// replIPs are the replication tests' addresses; no other test uses
// 127.0.57.x, so every service listens on its default port.
var replIPs = []string{"127.0.57.1", "127.0.57.2", "127.0.57.3"}

// replTTL is the nodes' presence lease.
const replTTL = 3 * time.Second

// replCluster is three nodes, r1 founding the cluster and r2 and r3
// joining it, all three etcd members (so any one of them may die).
type replCluster struct {
	t     *testing.T
	nodes []*node
	names []string
}

// newReplCluster starts the three nodes. prepare, when given, is called
// for each node's directory before it starts (to put its pool on a small
// filesystem, say).
func newReplCluster(t *testing.T, prepare func(i int, dir string)) *replCluster {
	t.Helper()
	for _, ip := range replIPs {
		needAddresses(t, ip+":7420", ip+":7421", ip+":7422", ip+":7425", ip+":10809")
	}
	start := time.Now()
	c := &replCluster{t: t}
	dirs := make([]string, len(replIPs))
	for i := range dirs {
		dirs[i] = t.TempDir()
		if prepare != nil {
			prepare(i, dirs[i])
		}
	}
	// Whatever happens, every node is killed at the end. Cleanups run
	// last in, first out: this one runs before those prepare registered,
	// such as an unmount of a node's pool.
	t.Cleanup(c.killAll)
	if keep := os.Getenv("STRATA_E2E_KEEP_LOGS"); keep != "" {
		// For a look at the nodes' logs after the test.
		t.Cleanup(func() {
			for i, n := range c.nodes {
				os.WriteFile(filepath.Join(keep, t.Name()+"-"+c.names[i]+".log"), []byte(n.fullLog()), 0o644)
			}
		})
	}
	for i, ip := range replIPs {
		dir := dirs[i]
		name := fmt.Sprintf("r%d", i+1)
		n := &node{t: t, bin: strataBinary(t), dir: dir, dataDir: filepath.Join(dir, "data"), ip: ip,
			api: ip + ":7420", nbd: ip + ":10809", replica: ip + ":7425", etcdC: ip + ":7421", etcdP: ip + ":7422",
			extra: []string{"--node-name", name, "--node-ttl", replTTL.String()}}
		if i > 0 {
			token := strings.TrimSpace(c.nodes[0].run("cluster", "token"))
			n.extra = append(n.extra, "--join", c.nodes[0].api, "--join-token", token)
		}
		c.nodes = append(c.nodes, n)
		c.names = append(c.names, name)
		n.start()
	}
	c.waitOnline(c.names...)
	t.Logf("cluster of 3 nodes up in %s", time.Since(start).Round(time.Millisecond))
	return c
}

// node returns the node named name.
func (c *replCluster) node(name string) *node {
	for i, n := range c.names {
		if n == name {
			return c.nodes[i]
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// killAll kills every node still running with SIGKILL.
func (c *replCluster) killAll() {
	for _, n := range c.nodes {
		if n.cmd != nil {
			n.kill9()
		}
	}
}

// stopAll sends SIGTERM to every node at once (one by one, the last ones
// would lose etcd's quorum while stopping) and waits for them to exit.
func (c *replCluster) stopAll() {
	c.t.Helper()
	for _, n := range c.nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	start := time.Now()
	deadline := time.After(150 * time.Second)
	for _, n := range c.nodes {
		select {
		case <-n.done:
			n.cmd = nil
		case <-deadline:
			c.t.Fatalf("%s did not stop within 150s of SIGTERM (a clean stop of all three at once takes 2-7 s: an engine gives up recording its detach after 2 s once its node is stopping):\n%s", n.api, n.log())
		}
	}
	c.t.Logf("all nodes stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// startAll starts every node at once and waits until all answer: a node
// alone cannot start, since etcd needs a quorum of its members.
func (c *replCluster) startAll() {
	c.t.Helper()
	start := time.Now()
	for _, n := range c.nodes {
		n.spawn()
	}
	for _, n := range c.nodes {
		n.waitUp()
	}
	c.waitOnline(c.names...)
	c.t.Logf("all nodes up and online %s after their start", time.Since(start).Round(time.Millisecond))
}

// fullLog returns the node's whole log.
func (n *node) fullLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
	return string(b)
}

// running returns a node that runs, to ask things of the cluster.
func (c *replCluster) running() *node {
	for _, n := range c.nodes {
		if n.cmd != nil {
			return n
		}
	}
	c.t.Fatal("no node runs")
	return nil
}

// waitOnline waits until a running node sees the named nodes online.
func (c *replCluster) waitOnline(names ...string) {
	c.t.Helper()
	n := c.running()
	deadline := time.Now().Add(30 * time.Second)
	for {
		nodes := nodeList(n)
		all := true
		for _, name := range names {
			all = all && nodes[name].State == "online"
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes %v are not all online after 30s:\n%s", names, n.run("node", "list"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replVolume is what `volume inspect -o json` says of a replicated volume.
type replVolume struct {
	Name           string `json:"name"`
	Node           string `json:"node"`
	State          string `json:"state"`
	Epoch          string `json:"epoch"` // a uint64: a string in JSON
	Degraded       bool   `json:"degraded"`
	ReplicasWanted int    `json:"replicasWanted"`
	Replicas       []struct {
		Node string `json:"node"`
		Mode string `json:"mode"`
	} `json:"replicas"`
}

func (v replVolume) mode(node string) string {
	for _, r := range v.Replicas {
		if r.Node == node {
			return r.Mode
		}
	}
	return ""
}

func (v replVolume) allInSync() bool {
	if v.Degraded || len(v.Replicas) != v.ReplicasWanted {
		return false
	}
	for _, r := range v.Replicas {
		if r.Mode != "in-sync" {
			return false
		}
	}
	return true
}

func (v replVolume) epoch() uint64 {
	e, _ := strconv.ParseUint(v.Epoch, 10, 64)
	return e
}

func (v replVolume) String() string {
	var parts []string
	for _, r := range v.Replicas {
		parts = append(parts, r.Node+" "+r.Mode)
	}
	return fmt.Sprintf("%s on %s, %s, epoch %s, degraded %v: %s", v.Name, v.Node, v.State, v.Epoch, v.Degraded, strings.Join(parts, ", "))
}

// inspect runs `volume inspect -o json` on a running node.
func (c *replCluster) inspect(vol string) replVolume {
	c.t.Helper()
	var v replVolume
	if err := json.Unmarshal([]byte(c.running().run("volume", "inspect", vol, "-o", "json")), &v); err != nil {
		c.t.Fatalf("volume inspect %s -o json: %v", vol, err)
	}
	return v
}

// waitVolume polls the volume until ok says yes and returns it.
func (c *replCluster) waitVolume(vol, what string, within time.Duration, ok func(replVolume) bool) replVolume {
	c.t.Helper()
	return pollVolume(c.t, vol, what, within, func() replVolume { return c.inspect(vol) }, c.logs, ok)
}

// pollVolume calls inspect until ok says yes about what it returns; logs
// gives the nodes' logs for the failure message.
func pollVolume(t *testing.T, vol, what string, within time.Duration, inspect func() replVolume, logs func() string, ok func(replVolume) bool) replVolume {
	t.Helper()
	start := time.Now()
	for {
		v := inspect()
		if ok(v) {
			t.Logf("%s after %s: %s", what, time.Since(start).Round(time.Millisecond), v)
			return v
		}
		if time.Since(start) > within {
			t.Fatalf("volume %s is not %s after %s: %s\n%s", vol, what, within, v, logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// check runs `volume check` on the volume's engine node; it must find the
// replicas on every node identical. When they differ, the nodes are
// killed and each one's replica is read from its pool: the failure shows
// which write each node holds in the differing blocks, and what w (when
// not nil) knows of them.
func (c *replCluster) check(vol string, w *replWriter) {
	c.t.Helper()
	v := c.inspect(vol)
	out, errOut, err := c.node(v.Node).try("volume", "check", vol, "--region", "64KiB")
	if err != nil {
		c.t.Fatalf("volume check %s: %v\n%s%s\n%s", vol, err, out, errOut, c.diagnose(vol, out, w))
	}
	if !strings.Contains(out, "identical") || strings.Count(out, ", ") != len(c.nodes)-1 {
		c.t.Fatalf("volume check %s does not find the replicas on all %d nodes identical:\n%s", vol, len(c.nodes), out)
	}
	c.t.Logf("%s", strings.TrimSpace(out))
}

// logs returns the tails of the nodes' logs, for failure messages.
func (c *replCluster) logs() string {
	var b strings.Builder
	for i, n := range c.nodes {
		fmt.Fprintf(&b, "--- log of %s (%s):\n%s\n", c.names[i], n.api, n.log())
	}
	return b.String()
}

var differRE = regexp.MustCompile(`offset (\d+) length (\d+)`)

// diagnose kills the nodes and reads, from each node's pool, the blocks
// of vol in the ranges `volume check` printed (at most 64 blocks).
func (c *replCluster) diagnose(vol, checkOut string, w *replWriter) string {
	c.killAll()
	pools := make([]*chain.Chain, len(c.nodes))
	for i, n := range c.nodes {
		p, err := chain.OpenPool(filepath.Join(n.dataDir, "pool"))
		if err != nil {
			return fmt.Sprintf("diagnose: open %s's pool: %v", c.names[i], err)
		}
		defer p.Close()
		if pools[i], err = p.Open(vol); err != nil {
			return fmt.Sprintf("diagnose: open %s's replica: %v", c.names[i], err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the differing blocks, as each node's pool holds them (seq of the write, 0 for zeroes):\n")
	shown := 0
	p := make([]byte, replBlock)
	for _, m := range differRE.FindAllStringSubmatch(checkOut, -1) {
		off, _ := strconv.ParseInt(m[1], 10, 64)
		length, _ := strconv.ParseInt(m[2], 10, 64)
		for blk := off / replBlock; blk < (off+length)/replBlock && shown < 64; blk++ {
			var row []string
			var seqs []uint64
			for i, ch := range pools {
				s := "?"
				if _, err := ch.ReadAt(p, blk*replBlock); err != nil {
					s = err.Error()
				} else {
					seq, err := parseBlock(p, blk)
					s = strconv.FormatUint(seq, 10)
					if err != nil {
						s += " (" + err.Error() + ")"
					}
					seqs = append(seqs, seq)
				}
				row = append(row, c.names[i]+" "+s)
			}
			if len(seqs) == len(pools) && seqs[0] == seqs[1] && seqs[1] == seqs[2] {
				continue
			}
			shown++
			fmt.Fprintf(&b, "  block %d (offset %d): %s", blk, blk*replBlock, strings.Join(row, ", "))
			if w != nil {
				st := w.st[blk]
				fmt.Fprintf(&b, "; writer: last acknowledged %d, issued since the last flush %v", st.acked, st.since)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

var caughtUpRE = regexp.MustCompile(`msg="replica caught up" volume=(\S+) node=(\S+) copied_bytes=(\d+)`)

// caughtUp returns the copied_bytes of the catch-ups of vol's replica on
// node that n's log reports, oldest first.
func caughtUp(n *node, vol, node string) []int64 {
	var out []int64
	for _, m := range caughtUpRE.FindAllStringSubmatch(n.fullLog(), -1) {
		if m[1] == vol && m[2] == node {
			b, _ := strconv.ParseInt(m[3], 10, 64)
			out = append(out, b)
		}
	}
	return out
}

// --- NBD ---

const nbdCmdFlush = 3

// replConn is an NBD connection in transmission phase, one request at a
// time: the handshake is the repo's client (nbd.Handshake, NBD_OPT_GO).
type replConn struct {
	c      net.Conn
	size   int64
	handle uint64
}

func dialNBD(addr, export string) (*replConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	exp, err := nbd.Handshake(c, export)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return &replConn{c: c, size: exp.Size}, nil
}

func (c *replConn) Close() error { return c.c.Close() }

// do sends one request and reads its reply (and a read's data into p). A
// non-nil error means the connection is unusable; errno is the server's
// error for the request.
func (c *replConn) do(cmd uint16, off int64, payload, readInto []byte) (errno uint32, err error) {
	c.handle++
	req := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(req[0:], nbdRequestMagic)
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], c.handle)
	binary.BigEndian.PutUint64(req[16:], uint64(off))
	n := len(payload)
	if cmd == nbdCmdRead {
		n = len(readInto)
	}
	binary.BigEndian.PutUint32(req[24:], uint32(n))
	// Replica failures take up to the replica timeout (5s) to be noticed,
	// and a failover's first attach longer: a request answered in 30s is
	// not stuck.
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.c.Write(append(req, payload...)); err != nil {
		return 0, err
	}
	var rep [16]byte
	if _, err := io.ReadFull(c.c, rep[:]); err != nil {
		return 0, err
	}
	if binary.BigEndian.Uint32(rep[0:]) != nbdReplyMagic || binary.BigEndian.Uint64(rep[8:]) != c.handle {
		return 0, fmt.Errorf("bad NBD reply %x", rep)
	}
	errno = binary.BigEndian.Uint32(rep[4:])
	if cmd == nbdCmdRead && errno == 0 {
		if _, err := io.ReadFull(c.c, readInto); err != nil {
			return 0, err
		}
	}
	return errno, nil
}

// --- blocks ---

const (
	replBlock = 4096
	replMagic = "STRATARP"
	replHdr   = 28 // magic, block, seq, crc32 of the rest
)

// blockContent is write seq's content of block b: a header naming both,
// the CRC-32 of the rest, and bytes that follow from (b, seq).
func blockContent(p []byte, b int64, seq uint64) {
	copy(p, replMagic)
	binary.BigEndian.PutUint64(p[8:], uint64(b))
	binary.BigEndian.PutUint64(p[16:], seq)
	r := rand.New(rand.NewPCG(seq, uint64(b)))
	body := p[replHdr:replBlock]
	for i := 0; i+8 <= len(body); i += 8 {
		binary.LittleEndian.PutUint64(body[i:], r.Uint64())
	}
	binary.LittleEndian.PutUint32(body[len(body)-4:], uint32(r.Uint64()))
	binary.BigEndian.PutUint32(p[24:], crc32.ChecksumIEEE(body))
}

// parseBlock says what block b holds: 0 for zeroes, else the seq of the
// write whose content it is exactly; an error for anything else.
func parseBlock(p []byte, b int64) (uint64, error) {
	if allZeroes(p) {
		return 0, nil
	}
	if string(p[:8]) != replMagic {
		return 0, fmt.Errorf("no block header: %x", p[:32])
	}
	if got := int64(binary.BigEndian.Uint64(p[8:])); got != b {
		return 0, fmt.Errorf("holds block %d's data (seq %d)", got, binary.BigEndian.Uint64(p[16:]))
	}
	seq := binary.BigEndian.Uint64(p[16:])
	if crc32.ChecksumIEEE(p[replHdr:]) != binary.BigEndian.Uint32(p[24:]) {
		return seq, fmt.Errorf("seq %d: checksum mismatch (torn or corrupt)", seq)
	}
	want := make([]byte, replBlock)
	blockContent(want, b, seq)
	if !bytes.Equal(p, want) {
		return seq, fmt.Errorf("seq %d: content differs from what was written", seq)
	}
	return seq, nil
}

func allZeroes(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// --- the writer ---

// blockState is what a block may hold. Seqs grow: every write has a new one.
type blockState struct {
	acked   uint64   // the last write acknowledged (0: none)
	durable uint64   // the last write acknowledged before a successful flush
	since   []uint64 // writes issued after durable (acknowledged or not)
}

// replWriter writes blocks of a volume over NBD from several connections,
// each owning a slice of the volume, one request at a time per connection,
// with a flush every flushEvery requests.
type replWriter struct {
	t         *testing.T
	vol       string
	blocks    int64
	maxBlocks int // blocks per request: 1 to maxBlocks
	conns     int
	addr      atomic.Pointer[string]
	seq       atomic.Uint64

	mu sync.Mutex
	st []blockState

	issuedBytes atomic.Int64 // bytes of writes sent
	ackedBytes  atomic.Int64 // bytes of writes acknowledged
	acks        atomic.Int64 // writes acknowledged
	errnos      atomic.Int64 // writes and flushes answered with an error
	dropped     atomic.Int64 // connections lost
	firstErrno  atomic.Pointer[string]

	stop chan struct{}
	wg   sync.WaitGroup
}

func newReplWriter(t *testing.T, vol string, size int64, conns, maxBlocks int) *replWriter {
	w := &replWriter{t: t, vol: vol, blocks: size / replBlock, conns: conns, maxBlocks: maxBlocks}
	w.st = make([]blockState, w.blocks)
	return w
}

// setAddr points the writer at an NBD address: connections lost reconnect there.
func (w *replWriter) setAddr(addr string) { w.addr.Store(&addr) }

// start starts the writer's connections at the address set.
func (w *replWriter) start() {
	w.stop = make(chan struct{})
	per := w.blocks / int64(w.conns)
	for i := 0; i < w.conns; i++ {
		w.wg.Add(1)
		go w.run(int64(i)*per, int64(i+1)*per, uint64(i))
	}
}

// halt stops the writer and waits for its connections to end.
func (w *replWriter) halt() {
	close(w.stop)
	w.wg.Wait()
}

func (w *replWriter) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// run writes random runs of blocks in [lo, hi) until stopped, reconnecting
// to the current address when the connection is lost.
func (w *replWriter) run(lo, hi int64, id uint64) {
	defer w.wg.Done()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), id))
	var c *replConn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	const flushEvery = 32
	n := 0
	for !w.stopped() {
		if c == nil {
			var err error
			if c, err = dialNBD(*w.addr.Load(), w.vol); err != nil {
				c = nil
				select {
				case <-w.stop:
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
		}
		count := 1 + r.IntN(w.maxBlocks)
		first := lo + r.Int64N(hi-lo-int64(count)+1)
		if err := w.write(c, first, count); err != nil {
			w.dropped.Add(1)
			c.Close()
			c = nil
			continue
		}
		if n++; n%flushEvery == 0 {
			if err := w.flush(c, lo, hi); err != nil {
				w.dropped.Add(1)
				c.Close()
				c = nil
			}
		}
	}
}

// write writes count blocks from first on c and records the outcome. It
// returns an error only when the connection is lost.
func (w *replWriter) write(c *replConn, first int64, count int) error {
	seq := w.seq.Add(1)
	p := make([]byte, count*replBlock)
	for i := 0; i < count; i++ {
		blockContent(p[i*replBlock:(i+1)*replBlock], first+int64(i), seq)
	}
	w.mu.Lock()
	for b := first; b < first+int64(count); b++ {
		w.st[b].since = append(w.st[b].since, seq)
	}
	w.mu.Unlock()
	w.issuedBytes.Add(int64(len(p)))
	errno, err := c.do(nbdCmdWrite, first*replBlock, p, nil)
	if err != nil {
		return err
	}
	if errno != 0 {
		w.noteErrno(fmt.Sprintf("write of blocks %d-%d (seq %d): NBD error %d", first, first+int64(count)-1, seq, errno))
		return nil
	}
	w.mu.Lock()
	for b := first; b < first+int64(count); b++ {
		w.st[b].acked = seq
	}
	w.mu.Unlock()
	w.ackedBytes.Add(int64(len(p)))
	w.acks.Add(1)
	return nil
}

// flush flushes c; when the server says done, the writes acknowledged in
// [lo, hi) before it (this connection's: they are the only ones there) are
// durable.
func (w *replWriter) flush(c *replConn, lo, hi int64) error {
	w.mu.Lock()
	acked := make([]uint64, hi-lo)
	for b := lo; b < hi; b++ {
		acked[b-lo] = w.st[b].acked
	}
	w.mu.Unlock()
	errno, err := c.do(nbdCmdFlush, 0, nil, nil)
	if err != nil {
		return err
	}
	if errno != 0 {
		w.noteErrno(fmt.Sprintf("flush: NBD error %d", errno))
		return nil
	}
	w.mu.Lock()
	for b := lo; b < hi; b++ {
		s := &w.st[b]
		if acked[b-lo] <= s.durable {
			continue
		}
		s.durable = acked[b-lo]
		keep := s.since[:0]
		for _, q := range s.since {
			if q > s.durable {
				keep = append(keep, q)
			}
		}
		s.since = keep
	}
	w.mu.Unlock()
	return nil
}

func (w *replWriter) noteErrno(msg string) {
	w.errnos.Add(1)
	w.firstErrno.CompareAndSwap(nil, &msg)
	w.t.Logf("writer: %s", msg)
}

// fill writes blocks [lo, hi) in runs of 256 (1 MiB) from the caller's
// goroutine, then flushes: a volume with data before the faults.
func (w *replWriter) fill(lo, hi int64) {
	w.t.Helper()
	c, err := dialNBD(*w.addr.Load(), w.vol)
	if err != nil {
		w.t.Fatalf("fill: %v", err)
	}
	defer c.Close()
	for b := lo; b < hi; b += 256 {
		if err := w.write(c, b, int(min(256, hi-b))); err != nil {
			w.t.Fatalf("fill: %v", err)
		}
	}
	if err := w.flush(c, lo, hi); err != nil {
		w.t.Fatalf("fill: flush: %v", err)
	}
	if n := w.errnos.Load(); n != 0 {
		w.t.Fatalf("fill: %d writes failed: %s", n, *w.firstErrno.Load())
	}
}

// waitAcked waits until more than bytes have been acknowledged since from
// (an ackedBytes value), while the writer runs.
func (w *replWriter) waitAcked(from, bytes int64, within time.Duration, what string) {
	w.t.Helper()
	deadline := time.Now().Add(within)
	for w.ackedBytes.Load()-from < bytes {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: %d bytes acknowledged in %s, want %d (%d writes failed, %d connections lost, first error %v)",
				what, w.ackedBytes.Load()-from, within, bytes, w.errnos.Load(), w.dropped.Load(), w.firstErrnoMsg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *replWriter) firstErrnoMsg() string {
	if p := w.firstErrno.Load(); p != nil {
		return *p
	}
	return "none"
}

// durability classes of verify.
const (
	// everyAcked: every acknowledged write must read back (the loss of
	// one node, or a clean restart).
	everyAcked = iota
	// flushedOnly: only writes acknowledged before a successful flush
	// must (SIGKILL of every node).
	flushedOnly
)

// verify reads the whole volume through the NBD server at addr, the
// writer stopped, and checks every block: it holds exactly the content of
// one write, the last one that must have survived (by class) or one issued
// after it, never older data, another block's data or torn data. It
// returns how many blocks hold an acknowledged write that class allowed
// to be lost (for flushedOnly: acknowledged writes lost to the SIGKILLs).
func (w *replWriter) verify(addr string, class int) (lostAllowed int) {
	w.t.Helper()
	c, err := dialNBD(addr, w.vol)
	if err != nil {
		w.t.Fatalf("verify: %v", err)
	}
	defer c.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	const chunk = 256
	buf := make([]byte, chunk*replBlock)
	var bad []string
	checked := 0
	for first := int64(0); first < w.blocks; first += chunk {
		n := min(chunk, w.blocks-first)
		p := buf[:n*replBlock]
		errno, err := c.do(nbdCmdRead, first*replBlock, nil, p)
		if err != nil || errno != 0 {
			w.t.Fatalf("verify: read of blocks %d-%d: %v (NBD error %d)", first, first+n-1, err, errno)
		}
		for i := int64(0); i < n; i++ {
			b := first + i
			s := w.st[b]
			must := s.acked
			if class == flushedOnly {
				must = s.durable
			}
			if must != 0 {
				checked++
			}
			got, perr := parseBlock(p[i*replBlock:(i+1)*replBlock], b)
			ok := perr == nil && (got == must || got > must && contains(s.since, got))
			if !ok {
				reason := "older data than the last write that must have survived"
				if perr != nil {
					reason = perr.Error()
				}
				bad = append(bad, fmt.Sprintf("block %d (offset %d): holds seq %d: %s; last acknowledged seq %d, last flushed %d, issued since the flush %v",
					b, b*replBlock, got, reason, s.acked, s.durable, s.since))
				continue
			}
			if got < s.acked {
				lostAllowed++
			}
		}
	}
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		w.t.Fatalf("DATA LOSS: %d blocks of volume %s read through %s are wrong:\n%s", len(bad), w.vol, addr, strings.Join(bad, "\n"))
	}
	w.t.Logf("verified %d blocks of %s through %s: %d hold a write that had to survive, all intact", w.blocks, w.vol, addr, checked)
	return lostAllowed
}

func contains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// mountSmallFS puts dir on a fresh ext4 filesystem of size bytes on a
// loop device, unmounted at the end of the test.
func mountSmallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount")
	img := filepath.Join(t.TempDir(), "small.img")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tool(t, "truncate", "-s", strconv.FormatInt(size, 10), img)
	tool(t, "mkfs.ext4", "-q", "-F", "-m", "0", img)
	tool(t, "mount", "-o", "loop", img, dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s; unmounting lazily", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fillFS writes zeroes to path until its filesystem is full and returns
// how many bytes it wrote.
func fillFS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("filling %s: %v", path, err)
		}
	}
	// Smaller writes take what the 1 MiB ones left.
	for _, sz := range []int{64 << 10, 4 << 10} {
		for {
			m, err := f.Write(buf[:sz])
			n += int64(m)
			if err != nil {
				break
			}
		}
	}
	f.Sync()
	return n
}
