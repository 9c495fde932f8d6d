package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/placement"
	"github.com/strata-storage/strata/internal/replica"
	"github.com/strata-storage/strata/internal/replset"
)

// Replication on this node: the engines of replicated volumes attached
// here, the in-sync set changes they commit, and the repair loop that
// brings returning replicas back and replaces those gone too long.
//
// Every change of a volume's replica set is a replset transition written
// by compare-and-swap of the volume's record (changeRepl); the engine acts
// on a change only once it has committed (invariant 2).

// Defaults of the replication settings (Config).
const (
	DefaultReplicaTimeout = 5 * time.Second
	DefaultReplaceAfter   = 10 * time.Minute
	repairInterval        = 2 * time.Second
)

// replEngines are the engines of replicated volumes running on this node.
type replEngines struct {
	mu sync.Mutex
	m  map[string]*replEngine
}

type replEngine struct {
	eng *engine.Volume
	// catching are the nodes whose catch-up runs now.
	catching map[string]bool
	// checkpointed is when the repair loop last checkpointed the engine.
	checkpointed time.Time
}

// checkpointInterval is how often the repair loop checkpoints an engine
// that wrote (engine.Volume.Checkpoint): the replicas' dirty-region logs
// list the regions written in the last one or two intervals.
const checkpointInterval = 5 * time.Second

func (r *replEngines) get(name string) *replEngine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[name]
}

func (r *replEngines) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.m))
	for n := range r.m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// changeRepl applies transition fn to volume name's replica set and writes
// the result by compare-and-swap, retrying on conflicts with a fresh read.
// It returns the record as written and the transition's actions.
func (s *Server) changeRepl(ctx context.Context, name string, fn func(replset.State) (replset.State, []replset.Action, error)) (meta.Volume, []replset.Action, error) {
	for attempt := 0; ; attempt++ {
		rec, err := s.meta.GetVolume(ctx, name)
		if err != nil {
			return rec, nil, err
		}
		if !rec.Replicated() {
			return rec, nil, fmt.Errorf("volume %q has no replica set: %w", name, errdefs.ErrFailedPrecondition)
		}
		next, acts, err := fn(rec.Replication)
		if err != nil {
			return rec, nil, err
		}
		if equalState(next, rec.Replication) {
			return rec, acts, nil
		}
		rec.Replication = next
		rec, err = s.meta.UpdateVolume(ctx, rec)
		if err == nil {
			return rec, acts, nil
		}
		if !errors.Is(err, meta.ErrConflict) || attempt >= 20 {
			return rec, nil, err
		}
	}
}

func equalState(a, b replset.State) bool {
	return a.Epoch == b.Epoch && a.Engine == b.Engine && a.Dirty == b.Dirty && a.Want == b.Want &&
		slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.Retired, b.Retired)
}

// placementNodes returns the cluster's nodes as placement sees them: a
// node is online while its presence lease lives (this node always is).
func (s *Server) placementNodes(ctx context.Context) ([]placement.Node, error) {
	nodes, online, err := s.meta.NodeStates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]placement.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, placement.Node{
			Name:      n.Name,
			Labels:    n.Labels,
			Online:    online[n.Name] || n.Name == s.node,
			Capacity:  n.PoolCapacity,
			Available: n.PoolAvailable,
		})
	}
	return out, nil
}

// replicaAddr returns the address of node's replica server.
func (s *Server) replicaAddr(ctx context.Context, node string) (string, error) {
	n, err := s.meta.GetNode(ctx, node)
	if err != nil {
		return "", err
	}
	addr := n.Addresses["replica"]
	if addr == "" {
		return "", fmt.Errorf("node %s has no replica server address (is it running an older strata?): %w", node, errdefs.ErrUnavailable)
	}
	return addr, nil
}

// control dials node's replica server for volume-level operations.
func (s *Server) control(ctx context.Context, node string) (*replica.Control, error) {
	addr, err := s.replicaAddr(ctx, node)
	if err != nil {
		return nil, err
	}
	c, err := replica.DialControl(ctx, addr, replica.WithTimeout(s.replicaTimeout))
	if err != nil {
		return nil, fmt.Errorf("replica server of node %s at %s: %w", node, addr, err)
	}
	return c, nil
}

// createReplicas makes the empty chain of volume name on every node of
// nodes (this node's through the agent). On failure it removes what it made.
func (s *Server) createReplicas(ctx context.Context, name string, size int64, nodes []string) error {
	return s.makeReplicas(ctx, name, nodes, "create the replica of volume "+strconv.Quote(name),
		func() error { _, err := s.agent.Create(name, size); return err },
		func(c *replica.Control) error { return c.Create(ctx, name, size) })
}

// makeReplicas makes volume name's chain on every node of nodes: local on
// this node, remote through the others' replica servers. On failure it
// deletes what it made and says what failed where.
func (s *Server) makeReplicas(ctx context.Context, name string, nodes []string, what string, local func() error, remote func(*replica.Control) error) error {
	var made []string
	for _, n := range nodes {
		var err error
		if n == s.node {
			err = local()
		} else {
			var c *replica.Control
			if c, err = s.control(ctx, n); err == nil {
				err = remote(c)
				c.Close()
			}
		}
		if err != nil {
			if derr := s.deleteReplicas(ctx, name, made); derr != nil {
				s.log.Warn("removing the replicas made before a failure", "volume", name, "err", derr)
			}
			return fmt.Errorf("%s on node %s: %w", what, n, err)
		}
		made = append(made, n)
	}
	return nil
}

// deleteReplicas deletes volume name's chain on nodes. Nodes that cannot
// be reached keep theirs; the error lists them.
func (s *Server) deleteReplicas(ctx context.Context, name string, nodes []string) error {
	var errs []error
	for _, n := range nodes {
		var err error
		if n == s.node {
			err = s.agent.Delete(name)
		} else {
			var c *replica.Control
			if c, err = s.control(ctx, n); err == nil {
				err = c.Delete(ctx, name)
				c.Close()
			}
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, fmt.Errorf("node %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// openReplica opens node's replica of volume name at epoch: the local
// chain c through this node's fence, or a connection to node's replica
// server.
func (s *Server) openReplica(ctx context.Context, name, node string, epoch uint64, c *chain.Chain) (engine.Replica, error) {
	if node == s.node {
		if c == nil {
			var err error
			if c, err = s.agent.Pool().Open(name); err != nil {
				return nil, err
			}
		}
		return replica.OpenLocal(c, s.agent.Epochs(), epoch)
	}
	addr, err := s.replicaAddr(ctx, node)
	if err != nil {
		return nil, err
	}
	r, err := replica.Dial(ctx, addr, name, epoch, replica.WithTimeout(s.replicaTimeout))
	if err != nil {
		return nil, fmt.Errorf("replica of volume %q on node %s: %w", name, node, err)
	}
	return r, nil
}

// StartEngine starts the engine of volume name on this node (the agent
// calls it on first use: an NBD connection, a mount, a snapshot). For a
// replicated volume it attaches the volume here, raising the epoch, opens
// the in-sync replicas at the new epoch (fencing any older engine), and
// drops those it cannot reach.
func (s *Server) StartEngine(name string, c *chain.Chain) (*engine.Volume, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	rec, err := s.meta.GetVolume(ctx, name)
	if err != nil {
		return nil, err
	}
	if !rec.Replicated() {
		return engine.New(name, replica.NewLocal(c))
	}
	callbacks := engine.Config{
		Local: s.node,
		Drop:  func(node string, cause error) error { return s.dropReplica(name, node, cause) },
		Join:  func(node string) error { return s.joinReplica(name, node) },
	}
	if st := rec.Replication; st.Engine == "" && len(st.Replicas) == 1 && st.Replicas[0].Node == s.node {
		// One replica, here, never attached elsewhere: no other engine
		// can exist, so no epoch is needed until replicas are added.
		eng, err := engine.NewReplicated(name, []engine.Member{{Node: s.node, Replica: replica.NewLocal(c)}}, callbacks)
		if err == nil {
			s.registerEngine(name, eng)
		}
		return eng, err
	}
	if rec.Node != s.node {
		return nil, fmt.Errorf("volume %q is attached to node %s; to move it here: strata volume attach %s --node %s: %w",
			name, rec.Node, name, s.node, errdefs.ErrFailedPrecondition)
	}
	rec, acts, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if st.Engine == s.node {
			// No engine of this volume runs here (the agent starts one
			// only then): the last one ended without detaching, in a
			// crash. Replicas may differ where its writes were in flight.
			var err error
			if st, _, err = st.EngineCrashed(s.node); err != nil {
				return st, nil, err
			}
		}
		return st.Attach(s.node)
	})
	if err != nil {
		return nil, fmt.Errorf("attach volume %q: %w", name, err)
	}
	epoch := rec.Replication.Epoch
	var members []engine.Member
	for _, node := range rec.Replication.InSync() {
		r, err := s.openReplica(ctx, name, node, epoch, c)
		if err == nil {
			members = append(members, engine.Member{Node: node, Replica: r})
			continue
		}
		if errors.Is(err, replica.ErrStaleEpoch) {
			// The replica has seen a newer epoch: another engine took
			// the volume after this attach was recorded. This one stops.
			closeAll(members)
			return nil, fmt.Errorf("attach volume %q: %w", name, err)
		}
		s.log.Warn("replica unreachable at attach; it leaves the in-sync set", "volume", name, "node", node, "err", err)
		if _, _, ferr := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
			return st.ReplicaFailed(node, time.Now().UTC())
		}); ferr != nil {
			closeAll(members)
			return nil, fmt.Errorf("attach volume %q: replica on %s: %v; and it could not leave the in-sync set: %w", name, node, err, ferr)
		}
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("attach volume %q: no in-sync replica can be reached: %w", name, errdefs.ErrUnavailable)
	}
	// Reads prefer the local replica.
	slices.SortStableFunc(members, func(a, b engine.Member) int {
		switch {
		case a.Node == s.node:
			return -1
		case b.Node == s.node:
			return 1
		}
		return 0
	})
	for _, a := range acts {
		if a.Kind == replset.ActionResyncDirty {
			if err := s.resync(ctx, name, members); err != nil {
				closeAll(members)
				return nil, fmt.Errorf("attach volume %q: resync after an engine crash: %w", name, err)
			}
		}
	}
	eng, err := engine.NewReplicated(name, members, callbacks)
	if err != nil {
		closeAll(members)
		return nil, err
	}
	s.registerEngine(name, eng)
	return eng, nil
}

// attachLater starts the engine of replicated volume name on this node in
// the background (at startup and after create), so that its replicas are
// watched and repaired whether or not I/O comes; failures are logged (the
// first I/O tries again).
func (s *Server) attachLater(name string) {
	go func() {
		if err := s.agent.Attach(name); err != nil {
			s.log.Warn("starting the engine of a replicated volume", "volume", name, "err", err)
		}
	}()
}

// registerEngine hands a started engine to the repair loop.
func (s *Server) registerEngine(name string, eng *engine.Volume) {
	s.repl.mu.Lock()
	if s.repl.m == nil {
		s.repl.m = map[string]*replEngine{}
	}
	s.repl.m[name] = &replEngine{eng: eng, catching: map[string]bool{}}
	s.repl.mu.Unlock()
	s.kickRepair()
}

// engineHere says whether this node may act as the engine of a volume in
// state st: it is attached here, or never attached and held here alone.
func (s *Server) engineHere(st replset.State) bool {
	return st.Engine == s.node || (st.Engine == "" && len(st.Replicas) >= 1)
}

func closeAll(ms []engine.Member) {
	for _, m := range ms {
		if c, ok := m.Replica.(interface{ Close() error }); ok {
			c.Close()
		}
	}
}

// setChangeTimeout bounds the etcd update an engine waits for when its
// replica set changes or it detaches: short once the node is stopping,
// when etcd may have lost its quorum (every node of a cluster stopped at
// once) and an update not made costs only a resync of the dirty regions
// at the next attach.
func (s *Server) setChangeTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return 2 * time.Second
	}
	return 10 * time.Second
}

// EngineClosed records a clean detach (the engine flushed every replica),
// so that the next attach needs no resync.
func (s *Server) EngineClosed(name string, eng *engine.Volume, flushErr error) {
	s.repl.mu.Lock()
	if e := s.repl.m[name]; e != nil && e.eng == eng {
		delete(s.repl.m, name)
	}
	s.repl.mu.Unlock()
	if flushErr != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.setChangeTimeout())
	defer cancel()
	_, _, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if st.Engine != s.node {
			return st, nil, nil // never attached (one local replica), or moved away
		}
		return st.Detach(s.node)
	})
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		s.log.Warn("recording the detach of a volume", "volume", name, "err", err)
	}
}

// dropReplica commits that node's replica of volume name leaves the
// in-sync set (the engine's Drop). It is refused when another node has
// attached the volume since: this engine is stale and must write nothing.
func (s *Server) dropReplica(name, node string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.setChangeTimeout())
	defer cancel()
	_, _, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if !s.engineHere(st) {
			return st, nil, fmt.Errorf("volume %q is attached to node %s now: %w", name, st.Engine, errdefs.ErrFailedPrecondition)
		}
		return st.ReplicaFailed(node, time.Now().UTC())
	})
	if err != nil {
		return err
	}
	s.log.Warn("replica left the in-sync set; the volume is degraded", "volume", name, "node", node, "cause", cause)
	s.kickRepair()
	return nil
}

// joinReplica commits that node's caught-up replica is in sync again.
func (s *Server) joinReplica(name, node string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.setChangeTimeout())
	defer cancel()
	_, _, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if !s.engineHere(st) {
			return st, nil, fmt.Errorf("volume %q is attached to node %s now: %w", name, st.Engine, errdefs.ErrFailedPrecondition)
		}
		return st.CaughtUp(node, time.Now().UTC())
	})
	if err == nil {
		s.log.Info("replica is in sync again", "volume", name, "node", node)
	}
	return err
}

func (s *Server) kickRepair() {
	select {
	case s.repairKick <- struct{}{}:
	default:
	}
}

// repairLoop brings back the replicas of this node's engines that are out,
// and replaces those out for longer than replaceAfter.
func (s *Server) repairLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(repairInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-s.repairKick:
		}
		for _, name := range s.repl.names() {
			s.repair(ctx, name, &wg)
		}
	}
}

// repair looks at one attached volume's replica set once.
func (s *Server) repair(ctx context.Context, name string, wg *sync.WaitGroup) {
	e := s.repl.get(name)
	if e == nil {
		return
	}
	if time.Since(e.checkpointed) >= checkpointInterval {
		e.checkpointed = time.Now()
		if err := e.eng.Checkpoint(); err != nil && !errors.Is(err, engine.ErrClosed) {
			s.log.Warn("checkpoint of the dirty-region logs", "volume", name, "err", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec, acts, err := s.changeRepl(rctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if !s.engineHere(st) {
			return st, nil, nil
		}
		return st.Tick(time.Now().UTC(), s.replaceAfter)
	})
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("replica repair", "volume", name, "err", err)
		}
		return
	}
	if !s.engineHere(rec.Replication) {
		return
	}
	s.carryOut(rctx, name, rec, acts)
	rec, err = s.meta.GetVolume(rctx, name)
	if err != nil {
		return
	}
	_, online, err := s.meta.NodeStates(rctx)
	if err != nil {
		return
	}
	for _, node := range rec.Replication.Retired {
		if !online[node] {
			continue
		}
		// A retired replica's node is back: its stale data goes.
		_, acts, err := s.changeRepl(rctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
			return st.ReplicaReturned(node, time.Now().UTC())
		})
		if err == nil {
			s.carryOut(rctx, name, rec, acts)
		}
	}
	for _, r := range rec.Replication.Replicas {
		if r.Mode == replset.CatchingUp && !online[r.Node] && !s.catchingNow(e, r.Node) {
			// Its node went away before or during the catch-up: it is
			// out, and is replaced if it stays away.
			s.markOut(rctx, name, r.Node, "its node is offline")
			continue
		}
		if r.Mode == replset.InSync || !online[r.Node] {
			continue
		}
		s.repl.mu.Lock()
		busy := e.catching[r.Node]
		if !busy {
			e.catching[r.Node] = true
		}
		s.repl.mu.Unlock()
		if busy {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				s.repl.mu.Lock()
				delete(e.catching, r.Node)
				s.repl.mu.Unlock()
			}()
			s.catchUp(ctx, name, e.eng, r.Node)
		}()
	}
}

// catchingNow says whether a catch-up of node's replica runs for e.
func (s *Server) catchingNow(e *replEngine, node string) bool {
	s.repl.mu.Lock()
	defer s.repl.mu.Unlock()
	return e.catching[node]
}

// markOut records that volume name's replica on node, which was catching
// up, failed: it is out, and Tick replaces it if it stays away.
func (s *Server) markOut(ctx context.Context, name, node, why string) {
	_, _, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if !s.engineHere(st) {
			return st, nil, nil
		}
		return st.ReplicaFailed(node, time.Now().UTC())
	})
	if err != nil {
		s.log.Warn("recording a replica out", "volume", name, "node", node, "err", err)
		return
	}
	s.log.Warn("replica is out", "volume", name, "node", node, "why", why)
}

// carryOut does what a Tick or an ha-update asked: place replacements and
// delete retired replicas.
func (s *Server) carryOut(ctx context.Context, name string, rec meta.Volume, acts []replset.Action) {
	for _, a := range acts {
		switch a.Kind {
		case replset.ActionPlace:
			if err := s.placeReplicas(ctx, rec, a); err != nil {
				s.log.Warn("placing a new replica", "volume", name, "err", err)
			}
		case replset.ActionDeleteReplica:
			if err := s.deleteReplicas(ctx, name, []string{a.Node}); err != nil {
				s.log.Warn("deleting a retired replica (retried later)", "volume", name, "node", a.Node, "err", err)
				continue
			}
			if _, _, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
				return st.ReplicaDeleted(a.Node)
			}); err != nil {
				s.log.Warn("recording a deleted replica", "volume", name, "node", a.Node, "err", err)
			}
		}
	}
}

// placeReplicas chooses nodes for a place action, makes the volume's
// empty chain there and adds them to the set (catching up; the repair
// loop copies their data).
func (s *Server) placeReplicas(ctx context.Context, rec meta.Volume, a replset.Action) error {
	nodes, err := s.placementNodes(ctx)
	if err != nil {
		return err
	}
	want := len(a.Keep) + a.Count
	chosen, err := placement.Place(placement.Request{Replicas: want, Size: rec.Size, Keep: a.Keep, Avoid: a.Avoid, Prefer: s.node}, nodes)
	if err != nil {
		return err
	}
	for _, n := range chosen {
		if slices.Contains(a.Keep, n) {
			continue
		}
		if err := s.createReplicas(ctx, rec.Name, rec.Size, []string{n}); err != nil {
			return err
		}
		if _, _, err := s.changeRepl(ctx, rec.Name, func(st replset.State) (replset.State, []replset.Action, error) {
			return st.AddReplica(n, time.Now().UTC())
		}); err != nil {
			return err
		}
		s.log.Info("new replica placed", "volume", rec.Name, "node", n)
	}
	s.kickRepair()
	return nil
}

// catchUp brings node's replica of volume name back into the in-sync set
// through the engine: it marks the replica catching up, then copies what
// it lacks while writes continue. A replica this engine dropped itself
// gets the blocks it missed; any other (out before this engine started,
// or new) gets every extent written on either side since the last
// snapshot, or the whole written volume when it lacks that snapshot.
func (s *Server) catchUp(ctx context.Context, name string, eng *engine.Volume, node string) {
	rec, err := s.meta.GetVolume(ctx, name)
	if err != nil {
		return
	}
	r, err := s.openReplica(ctx, name, node, rec.Replication.Epoch, nil)
	if err != nil {
		return // still away; the next round tries again
	}
	_, _, err = s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		if !s.engineHere(st) {
			return st, nil, fmt.Errorf("volume %q is attached to node %s now: %w", name, st.Engine, errdefs.ErrFailedPrecondition)
		}
		return st.ReplicaReturned(node, time.Now().UTC())
	})
	if err != nil {
		closeAll([]engine.Member{{Replica: r}})
		s.log.Warn("replica returned but cannot catch up", "volume", name, "node", node, "err", err)
		return
	}
	if err := s.pruneSnapshots(ctx, name, node); err != nil {
		s.log.Warn("replica catch-up: snapshots deleted while it was away", "volume", name, "node", node, "err", err)
	}
	if err := s.copyHistory(ctx, name, eng, node, r); err != nil {
		s.log.Warn("replica catch-up: the volume's snapshots could not be copied; the replica gets the current data only", "volume", name, "node", node, "err", err)
	}
	var extra []engine.Extent
	if eng.Track(node) {
		// Not dropped by this engine: from now on it records what the
		// replica misses, and what it missed before is listed now.
		if extra, err = s.unknownDifferences(ctx, name, eng, node); err != nil {
			eng.Untrack(node)
			closeAll([]engine.Member{{Replica: r}})
			s.log.Warn("replica catch-up: extents", "volume", name, "node", node, "err", err)
			return
		}
	}
	start := time.Now()
	copied, err := eng.CatchUp(ctx, node, r, extra)
	if errors.Is(err, engine.ErrCatchUpAbandoned) {
		s.markOut(ctx, name, node, err.Error())
	}
	if err != nil {
		s.log.Warn("replica catch-up stopped (retried)", "volume", name, "node", node, "copied", copied, "err", err)
		return
	}
	s.log.Info("replica caught up", "volume", name, "node", node, "copied_bytes", copied, "took", time.Since(start).Round(time.Millisecond))
	s.catchUpBytes.Add(copied)
}

// unknownDifferences returns the extents where node's replica may differ
// from the in-sync ones when no engine tracked what it missed: what either
// side wrote since the volume's last snapshot (snapshots need every replica
// in sync, so both hold it), or everything either side wrote.
func (s *Server) unknownDifferences(ctx context.Context, name string, eng *engine.Volume, node string) ([]engine.Extent, error) {
	es, err := s.headExtents(ctx, name, eng.InSync()[0], node)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Extent, 0, len(es))
	for _, e := range es {
		out = append(out, engine.Extent{Offset: e.Offset, Length: e.Length})
	}
	return out, nil
}

// headExtents returns the extents the replicas of volume name on nodes
// changed since the volume's last snapshot (every replica holds it:
// snapshots are taken only with all replicas in sync), or since the start
// on a replica that lacks it.
func (s *Server) headExtents(ctx context.Context, name string, nodes ...string) ([]chain.Extent, error) {
	from := ""
	if snaps, err := s.meta.ListSnapshots(ctx, name); err == nil {
		var last meta.Snapshot
		for _, sn := range snaps {
			if sn.State == meta.StateReady && sn.Created.After(last.Created) {
				last = sn
			}
		}
		from = last.Name
	}
	var out []chain.Extent
	for _, n := range nodes {
		es, err := s.replicaExtents(ctx, name, n, from)
		if errors.Is(err, errdefs.ErrNotFound) && from != "" {
			es, err = s.replicaExtents(ctx, name, n, "")
		}
		if err != nil {
			return nil, fmt.Errorf("extents of the replica on %s: %w", n, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

// replicaExtents returns the extents node's replica of volume name changed
// since snapshot from ("" for all).
func (s *Server) replicaExtents(ctx context.Context, name, node, from string) ([]chain.Extent, error) {
	if node == s.node {
		c, err := s.agent.Pool().Open(name)
		if err != nil {
			return nil, err
		}
		return c.ChangedExtents(from, "")
	}
	c, err := s.control(ctx, node)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Extents(ctx, name, from, "")
}

// resync makes the in-sync replicas identical again after an engine crash
// (invariant 6): in the regions their dirty-region logs list (where writes
// may have been in flight), regions whose checksums differ from the first
// replica's are copied from it. When a log cannot be read, the candidates
// are the regions either replica changed since the last snapshot.
func (s *Server) resync(ctx context.Context, name string, members []engine.Member) error {
	if len(members) < 2 {
		return nil
	}
	src := members[0]
	size := src.Replica.Size()
	nodes := make([]string, len(members))
	for i, m := range members {
		nodes[i] = m.Node
	}
	regions, from, err := s.resyncCandidates(ctx, name, nodes)
	if err != nil {
		return err
	}
	var compared, copied int64
	for _, m := range members[1:] {
		diff, n, err := s.differingRegions(ctx, name, size, src.Node, m.Node, regions)
		if err != nil {
			return err
		}
		compared += n
		buf := make([]byte, resyncRegion)
		for _, e := range diff {
			n, _, err := engine.CopyExtent(m.Replica, src.Replica, e, buf)
			copied += n
			if err != nil {
				return err
			}
		}
		if err := m.Replica.Flush(); err != nil {
			return err
		}
	}
	s.resyncCompared.Add(compared)
	lvl := slog.LevelInfo
	if copied > 0 {
		lvl = slog.LevelWarn
	}
	s.log.Log(ctx, lvl, "resynced the replicas after an engine crash", "volume", name, "candidates", from,
		"regions", len(regions), "compared_bytes", compared, "copied_bytes", copied)
	return nil
}

// resyncRegion is the unit resync compares and copies (a dirty-region
// log's region is a whole number of them).
const resyncRegion = 1 << 20

// resyncCandidates returns the offsets of the regions where the replicas
// of volume name on nodes may differ after an engine crash, in order, and
// where they come from: the union of the replicas' dirty-region logs, or,
// when one cannot be read, the regions changed since the last snapshot.
func (s *Server) resyncCandidates(ctx context.Context, name string, nodes []string) ([]int64, string, error) {
	set := map[int64]bool{}
	var logErr error
	for _, n := range nodes {
		offs, err := s.dirtyRegions(ctx, name, n)
		if err != nil {
			logErr = fmt.Errorf("node %s: %w", n, err)
			break
		}
		for _, o := range offs {
			for off := o; off < o+replica.DirtyRegion; off += resyncRegion {
				set[off] = true
			}
		}
	}
	from := "dirty-region logs"
	if logErr != nil {
		s.log.Warn("a dirty-region log cannot be read; resync compares what changed since the last snapshot", "volume", name, "err", logErr)
		from = "extents since the last snapshot"
		clear(set)
		es, err := s.headExtents(ctx, name, nodes...)
		if err != nil {
			return nil, "", err
		}
		for _, e := range es {
			for off := e.Offset / resyncRegion * resyncRegion; off < e.Offset+e.Length; off += resyncRegion {
				set[off] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), from, nil
}

// dirtyRegions returns the regions node's dirty-region log of volume name
// lists.
func (s *Server) dirtyRegions(ctx context.Context, name, node string) ([]int64, error) {
	if node == s.node {
		return s.agent.Epochs().DirtyRegions(name)
	}
	c, err := s.control(ctx, node)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.DirtyRegions(ctx, name)
}

// maxChecksumRun bounds the regions one checksums request covers.
const maxChecksumRun = 256

// differingRegions compares the regions at offsets regions (sorted) between
// node a's and node b's replica of volume name, one checksums request per
// run of adjacent regions, and returns those that differ and the bytes
// compared.
func (s *Server) differingRegions(ctx context.Context, name string, size int64, a, b string, regions []int64) ([]engine.Extent, int64, error) {
	var out []engine.Extent
	var compared int64
	for i := 0; i < len(regions); {
		start := regions[i]
		j := i + 1
		for j < len(regions) && j-i < maxChecksumRun && regions[j] == regions[j-1]+resyncRegion {
			j++
		}
		i = j
		n := min(regions[j-1]+resyncRegion, size) - start
		if n <= 0 {
			continue
		}
		sa, err := s.checksums(ctx, name, a, start, n, resyncRegion)
		if err != nil {
			return nil, compared, err
		}
		sb, err := s.checksums(ctx, name, b, start, n, resyncRegion)
		if err != nil {
			return nil, compared, err
		}
		compared += n
		for k := range sa {
			if k >= len(sb) || sa[k] != sb[k] {
				off := start + int64(k)*resyncRegion
				out = append(out, engine.Extent{Offset: off, Length: min(resyncRegion, size-off)})
			}
		}
	}
	return out, compared, nil
}

// checksums returns the region checksums of node's replica of volume name
// over [off, off+length), which must be within the volume.
func (s *Server) checksums(ctx context.Context, name, node string, off, length, region int64) ([]replica.Checksum, error) {
	if node == s.node {
		c, err := s.agent.Pool().Open(name)
		if err != nil {
			return nil, err
		}
		return replica.Checksums(c, off, length, region)
	}
	c, err := s.control(ctx, node)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Checksums(ctx, name, off, length, region)
}

// placeSpec is where a new volume's replicas may go.
type placeSpec struct {
	replicas     int
	nodes, zones []string
}

// placeSpecOf reads and checks the placement fields of a create request.
func placeSpecOf(req *pb.CreateVolumeRequest) (placeSpec, error) {
	spec := placeSpec{replicas: int(req.Replicas), nodes: req.Nodes, zones: req.Zones}
	if spec.replicas == 0 {
		spec.replicas = 1
	}
	if spec.replicas < 1 || spec.replicas > placement.MaxReplicas {
		return spec, fmt.Errorf("replicas %d: a volume has 1 to %d replicas: %w", req.Replicas, placement.MaxReplicas, errdefs.ErrInvalidArgument)
	}
	for _, n := range spec.nodes {
		if err := errdefs.ValidateName("node", n); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// matches says whether an existing volume was made with this spec (for
// idempotent creates): its number of replicas.
func (p placeSpec) matches(rec meta.Volume) bool {
	want := p.replicas
	if want == 0 {
		want = 1
	}
	have := rec.Replication.Want
	if have == 0 {
		have = 1
	}
	return want == have
}

func replicasText(rec meta.Volume) string {
	if rec.Replication.Want <= 1 {
		return ""
	}
	return fmt.Sprintf(", %d replicas", rec.Replication.Want)
}

// replicaNodes returns the nodes holding volume rec's replicas.
func replicaNodes(rec meta.Volume) []string {
	if !rec.Replicated() {
		return []string{rec.Node}
	}
	out := make([]string, 0, len(rec.Replication.Replicas))
	for _, r := range rec.Replication.Replicas {
		out = append(out, r.Node)
	}
	return out
}

// place chooses the nodes of a new volume's replicas. One replica with no
// filter goes on this node, as on a single node.
func (s *Server) place(ctx context.Context, size int64, spec placeSpec) ([]string, error) {
	if spec.replicas <= 1 && len(spec.nodes) == 0 && len(spec.zones) == 0 {
		return []string{s.node}, nil
	}
	nodes, err := s.placementNodes(ctx)
	if err != nil {
		return nil, err
	}
	return placement.Place(placement.Request{Replicas: spec.replicas, Size: size, Nodes: spec.nodes, Zones: spec.zones, Prefer: s.node}, nodes)
}

// stateDegraded is shown for a ready volume with fewer in-sync replicas
// than it wants.
const stateDegraded = "degraded"

// replicaView fills the replication fields of v from rec.
func replicaView(v *pb.Volume, rec meta.Volume) {
	if !rec.Replicated() {
		v.ReplicasWanted = 1
		v.Replicas = []*pb.VolumeReplica{{Node: rec.Node, Mode: string(replset.InSync), Since: timestamppb.New(rec.Created)}}
		return
	}
	st := rec.Replication
	v.ReplicasWanted = int32(st.Want)
	v.Epoch = st.Epoch
	v.Degraded = st.Degraded()
	for _, r := range st.Replicas {
		v.Replicas = append(v.Replicas, &pb.VolumeReplica{Node: r.Node, Mode: string(r.Mode), Since: timestamppb.New(r.Since)})
	}
	if v.Degraded && rec.State == meta.StateReady {
		v.State = stateDegraded
	}
}
