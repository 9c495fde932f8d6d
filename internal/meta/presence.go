package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultNodeTTL is how long a node stays online after its last word to
// etcd: the TTL of its presence lease (see KeepPresence).
const DefaultNodeTTL = 10 * time.Second

func presenceKey(node string) string { return prefix + "presence/" + node }

// Presence keeps a node online: its presence key lives under an etcd lease
// that the node keeps alive. When the node dies, or cannot reach etcd's
// quorum, for longer than the TTL, the lease expires, etcd deletes the
// key and the node is offline (see OnlineNodes). Close it to stop.
type Presence struct {
	store  *Store
	node   string
	ttl    time.Duration
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID
}

// KeepPresence puts node's presence key under a lease of ttl
// (DefaultNodeTTL when 0; etcd makes leases shorter than about 2s that
// long) and keeps the lease alive until Close. When the lease is lost (etcd
// was out of reach for longer than ttl) it takes a new one as soon as etcd
// answers again. It returns once the key is there; problems after that go
// to log (slog.Default() when nil).
func (s *Store) KeepPresence(ctx context.Context, node string, ttl time.Duration, log *slog.Logger) (*Presence, error) {
	if ttl <= 0 {
		ttl = DefaultNodeTTL
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Presence{store: s, node: node, ttl: ttl, log: log, done: make(chan struct{})}
	id, err := p.register(ctx)
	if err != nil {
		return nil, fmt.Errorf("meta: presence of node %q: %w", node, err)
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	go p.run(kctx, id)
	return p, nil
}

// register grants a lease and puts the presence key under it.
func (p *Presence) register(ctx context.Context) (clientv3.LeaseID, error) {
	secs := int64(math.Ceil(p.ttl.Seconds()))
	lease, err := p.store.cli.Grant(ctx, secs)
	if err != nil {
		return 0, etcdErr(err)
	}
	val, _ := json.Marshal(struct {
		Since time.Time `json:"since"`
	}{time.Now().UTC()})
	if _, err := p.store.cli.Put(ctx, presenceKey(p.node), string(val), clientv3.WithLease(lease.ID)); err != nil {
		p.revoke(lease.ID)
		return 0, etcdErr(err)
	}
	p.mu.Lock()
	p.lease = lease.ID
	p.mu.Unlock()
	return lease.ID, nil
}

func (p *Presence) run(ctx context.Context, id clientv3.LeaseID) {
	defer close(p.done)
	for {
		// The channel closes when the lease expires (etcd did not hear
		// from us within the TTL) or ctx ends; the client retries on
		// its own while the lease lives.
		ch, err := p.store.cli.KeepAlive(ctx, id)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("this node's presence lease was lost (etcd out of reach for longer than its TTL); the node shows offline until it gets a new one",
			"node", p.node, "ttl", p.ttl)
		for delay := 200 * time.Millisecond; ; delay = min(2*delay, p.ttl) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			rctx, cancel := context.WithTimeout(ctx, p.ttl)
			id, err = p.register(rctx)
			cancel()
			if err == nil {
				p.log.Info("this node is online again", "node", p.node)
				break
			}
		}
	}
}

// revoke ends a lease (and deletes the key under it) when etcd answers
// within a couple of seconds; otherwise the lease expires on its own.
func (p *Presence) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.store.cli.Revoke(ctx, id)
}

// Close stops keeping the node online and revokes its lease, so that the
// node shows offline at once rather than after the TTL. It waits for no
// more than two seconds when etcd does not answer.
func (p *Presence) Close() error {
	p.cancel()
	<-p.done
	p.mu.Lock()
	id := p.lease
	p.mu.Unlock()
	p.revoke(id)
	return nil
}

// OnlineNodes returns the records of the nodes that are online (whose
// presence lease lives), sorted by name. A node without a record (it has
// not written one yet) is left out.
func (s *Store) OnlineNodes(ctx context.Context) ([]Node, error) {
	nodes, online, err := s.nodesAndPresence(ctx)
	if err != nil {
		return nil, err
	}
	out := nodes[:0]
	for _, n := range nodes {
		if online[n.Name] {
			out = append(out, n)
		}
	}
	return out, nil
}

// NodeStates returns every node record, sorted by name, and which nodes are
// online (whose presence lease lives), both read at the same revision.
func (s *Store) NodeStates(ctx context.Context) ([]Node, map[string]bool, error) {
	return s.nodesAndPresence(ctx)
}

func (s *Store) nodesAndPresence(ctx context.Context) ([]Node, map[string]bool, error) {
	sorted := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(prefix+"nodes/", sorted...),
		clientv3.OpGet(prefix+"presence/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, nil, etcdErr(err)
	}
	var nodes []Node
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, nil, fmt.Errorf("meta: record %s is corrupt: %v", kv.Key, err)
		}
		n.Rev = kv.ModRevision
		nodes = append(nodes, n)
	}
	online := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		online[strings.TrimPrefix(string(kv.Key), prefix+"presence/")] = true
	}
	return nodes, online, nil
}
