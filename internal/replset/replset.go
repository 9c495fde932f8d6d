// Package replset holds the replication decisions of one volume as a
// deterministic state machine: which replicas are in the in-sync set, the
// epoch, which node runs the engine, who rebuilds from whom, when a replica
// is replaced. It does no I/O, reads no clock and starts no goroutine.
//
// A State is stored in etcd as JSON (by internal/meta) and changed only by
// compare-and-swap. Each event is a method of State that returns the next
// State and the Actions the caller must carry out (start a rebuild, place a
// replacement, delete a replica's data); it never changes its receiver, and
// on error returns the receiver unchanged and no action. The caller writes
// the new State with a compare-and-swap first and carries out the actions
// only once that has committed; if the swap fails it reads the State again
// and replays the event.
//
// The numbered invariants are those of the architecture document's
// "Replication" section.
// The rules this package keeps:
//
//   - The epoch rises by exactly one in every transition that changes the
//     in-sync set or moves the engine to another node, and in no other
//     (invariants 2 and 3: a replica leaves the in-sync set only by a swap
//     that raises the epoch, and an engine started on a new epoch fences
//     every older one).
//   - The in-sync set is never empty: the last in-sync replica can neither
//     fail out (ErrLastInSync: the engine fails the write instead, invariant
//     1) nor be removed.
//   - A catching-up replica always has a Source, an in-sync replica it
//     rebuilds from; when that source leaves the in-sync set, a new one is
//     chosen and a rebuild action restarts the copy (invariant 5: the
//     rebuild copies only what the target lacks, so restarting is cheap).
//   - Replicas are kept sorted by node name, so that equal histories give
//     equal States and equal JSON.
package replset

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/placement"
)

// Mode is where a replica stands with respect to the in-sync set.
type Mode string

// Replica modes.
const (
	// InSync replicas are in the in-sync set: the engine acknowledges a
	// write only once every one of them has it (invariant 1).
	InSync Mode = "in-sync"
	// CatchingUp replicas receive the engine's writes while a rebuild
	// copies what they lack from Source; they join the in-sync set when
	// the rebuild is done (CaughtUp).
	CatchingUp Mode = "catching-up"
	// Out replicas failed: the engine does not write to them. They come
	// back through ReplicaReturned, or are replaced after a while (Tick).
	Out Mode = "out"
)

// Replica is one replica of the volume, on one node.
type Replica struct {
	// Node is the node holding the replica.
	Node string `json:"node"`
	// Mode is InSync, CatchingUp or Out.
	Mode Mode `json:"mode"`
	// Since is when the replica entered Mode.
	Since time.Time `json:"since"`
	// Source is, for a CatchingUp replica, the node of the in-sync
	// replica it rebuilds from; empty in the other modes.
	Source string `json:"source,omitempty"`
}

// State is the replica set of one volume.
type State struct {
	// Epoch rises with every change of the in-sync set and every move of
	// the engine; replicas refuse writes from an older epoch (invariant 3).
	// 0 until the first Attach.
	Epoch uint64 `json:"epoch"`
	// Engine is the node running the volume's engine, "" when detached.
	Engine string `json:"engine,omitempty"`
	// Dirty says an engine was attached and has not detached cleanly since:
	// replicas may differ where writes were in flight. Attach sets it, a
	// clean Detach clears it, and an Attach that finds it set asks for a
	// resync of the dirty regions (invariant 6).
	Dirty bool `json:"dirty,omitempty"`
	// Want is how many replicas the volume should have (1 to
	// placement.MaxReplicas).
	Want int `json:"want"`
	// Replicas are the volume's replicas, sorted by node name.
	Replicas []Replica `json:"replicas"`
	// Retired are nodes, sorted, that may still hold data of a replica
	// that was removed from the set. Their data is deleted (an
	// ActionDeleteReplica) once they are reachable, and they get no new
	// replica of the volume until ReplicaDeleted says it is gone.
	Retired []string `json:"retired,omitempty"`
}

// ActionKind says what an Action asks for.
type ActionKind string

// Action kinds.
const (
	// ActionRebuild: copy to the catching-up replica on Node what it lacks
	// from the in-sync replica on Source, then report CaughtUp. The
	// engine, if attached, also writes to the replica meanwhile.
	ActionRebuild ActionKind = "rebuild"
	// ActionPlace: choose Count new nodes (placement.Place with Keep and
	// Avoid), then call AddReplica for each.
	ActionPlace ActionKind = "place"
	// ActionDeleteReplica: delete the volume's replica data on Node, then
	// report ReplicaDeleted.
	ActionDeleteReplica ActionKind = "delete-replica"
	// ActionResyncDirty: before it serves I/O, the engine on Node reads the
	// dirty-region logs of every replica and copies those regions from the
	// replica on Source to the replicas on Targets (invariant 6).
	ActionResyncDirty ActionKind = "resync-dirty"
)

// Action is work a transition asks the caller to do once the new State has
// been written.
type Action struct {
	Kind ActionKind `json:"kind"`
	// Node is the node the action is about: the rebuild's target, the
	// replica to delete, the engine that resyncs.
	Node string `json:"node,omitempty"`
	// Source is the node of the in-sync replica a rebuild or resync
	// copies from.
	Source string `json:"source,omitempty"`
	// Targets are the nodes of the replicas a resync makes equal to Source.
	Targets []string `json:"targets,omitempty"`
	// Count is how many new replicas to place.
	Count int `json:"count,omitempty"`
	// Keep and Avoid are the placement.Request fields of a place action.
	Keep  []string `json:"keep,omitempty"`
	Avoid []string `json:"avoid,omitempty"`
}

// String writes the action on one line: "rebuild n2 from n1", "place 1
// keep=n1,n3 avoid=n2", "delete-replica n2", "resync-dirty on n2 from n2 to
// n3".
func (a Action) String() string {
	switch a.Kind {
	case ActionRebuild:
		return fmt.Sprintf("rebuild %s from %s", a.Node, a.Source)
	case ActionPlace:
		s := fmt.Sprintf("place %d", a.Count)
		if len(a.Keep) > 0 {
			s += " keep=" + strings.Join(a.Keep, ",")
		}
		if len(a.Avoid) > 0 {
			s += " avoid=" + strings.Join(a.Avoid, ",")
		}
		return s
	case ActionDeleteReplica:
		return fmt.Sprintf("delete-replica %s", a.Node)
	case ActionResyncDirty:
		return fmt.Sprintf("resync-dirty on %s from %s to %s", a.Node, a.Source, strings.Join(a.Targets, ","))
	}
	return fmt.Sprintf("%s node=%s source=%s", a.Kind, a.Node, a.Source)
}

// ErrLastInSync is wrapped by the error of a transition that would empty
// the in-sync set. When a write to the last in-sync replica fails, the
// engine must fail the write: dropping the replica would acknowledge a
// write that is on no replica of the set.
var ErrLastInSync = fmt.Errorf("last in-sync replica: %w", errdefs.ErrFailedPrecondition)

// New returns the State of a volume whose replicas have just been created,
// empty and so identical, on nodes: all in-sync since now, Want the number
// of nodes, epoch 0, no engine.
func New(nodes []string, now time.Time) (State, error) {
	if len(nodes) < 1 || len(nodes) > placement.MaxReplicas {
		return State{}, fmt.Errorf("replset: %d replicas, a volume has 1 to %d: %w", len(nodes), placement.MaxReplicas, errdefs.ErrInvalidArgument)
	}
	s := State{Want: len(nodes)}
	for _, n := range nodes {
		s.Replicas = append(s.Replicas, Replica{Node: n, Mode: InSync, Since: now})
	}
	slices.SortFunc(s.Replicas, byNode)
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	return s, nil
}

func byNode(a, b Replica) int { return strings.Compare(a.Node, b.Node) }

// Validate checks that s is well formed: Want in range, no more replicas
// than wanted, named, distinct and sorted replicas with known modes, a
// Source (an in-sync replica) on exactly the catching-up ones, and retired
// nodes sorted and outside the set. Every transition checks its receiver.
func (s State) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("replset: invalid state: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	if s.Want < 1 || s.Want > placement.MaxReplicas {
		return bad("want %d replicas, not 1 to %d", s.Want, placement.MaxReplicas)
	}
	if len(s.Replicas) == 0 || len(s.Replicas) > s.Want {
		return bad("%d replicas for %d wanted", len(s.Replicas), s.Want)
	}
	for i, r := range s.Replicas {
		if r.Node == "" {
			return bad("a replica has no node")
		}
		if i > 0 && s.Replicas[i-1].Node >= r.Node {
			return bad("replicas not sorted by distinct node names")
		}
		switch r.Mode {
		case InSync, Out:
			if r.Source != "" {
				return bad("%s replica on %s has a source", r.Mode, r.Node)
			}
		case CatchingUp:
			if !slices.Contains(s.InSync(), r.Source) {
				return bad("catching-up replica on %s rebuilds from %q, not an in-sync replica", r.Node, r.Source)
			}
		default:
			return bad("replica on %s has mode %q", r.Node, r.Mode)
		}
	}
	for i, n := range s.Retired {
		if n == "" || s.Has(n) || (i > 0 && s.Retired[i-1] >= n) {
			return bad("retired nodes %v are not sorted, distinct and outside the set", s.Retired)
		}
	}
	return nil
}

// InSync returns the nodes of the in-sync replicas, sorted.
func (s State) InSync() []string {
	var nodes []string
	for _, r := range s.Replicas {
		if r.Mode == InSync {
			nodes = append(nodes, r.Node)
		}
	}
	return nodes
}

// Degraded reports whether fewer replicas are in-sync than wanted.
func (s State) Degraded() bool { return len(s.InSync()) < s.Want }

// Has reports whether node holds one of the volume's replicas, in any mode.
func (s State) Has(node string) bool { return s.index(node) >= 0 }

func (s State) index(node string) int {
	return slices.IndexFunc(s.Replicas, func(r Replica) bool { return r.Node == node })
}

func (s State) mode(node string) Mode {
	if i := s.index(node); i >= 0 {
		return s.Replicas[i].Mode
	}
	return ""
}

// source is the in-sync replica a rebuild or resync copies from: the
// engine's node when it holds an in-sync replica (it is local to the writes
// and reads are served from it, so it is never behind), else the first
// in-sync replica by node name; "" when none is in-sync.
func (s State) source() string {
	if s.Engine != "" && s.mode(s.Engine) == InSync {
		return s.Engine
	}
	if in := s.InSync(); len(in) > 0 {
		return in[0]
	}
	return ""
}

// clone returns a deep copy of s, for a transition to change.
func (s State) clone() State {
	s.Replicas = slices.Clone(s.Replicas)
	s.Retired = slices.Clone(s.Retired)
	return s
}

// settle finishes a transition from old to s: it raises the epoch by one
// when the in-sync set changed or the engine moved to another node
// (invariants 2 and 3), and gives every catching-up replica whose source
// left the in-sync set a new source, restarting its rebuild.
func (s State) settle(old State, acts []Action) (State, []Action) {
	if !slices.Equal(old.InSync(), s.InSync()) || (s.Engine != "" && s.Engine != old.Engine) {
		s.Epoch = old.Epoch + 1
	}
	for i, r := range s.Replicas {
		if r.Mode == CatchingUp && s.mode(r.Source) != InSync {
			s.Replicas[i].Source = s.source()
			acts = append(acts, Action{Kind: ActionRebuild, Node: r.Node, Source: s.Replicas[i].Source})
		}
	}
	return s, acts
}

// check validates s and node, the node an event is about.
func (s State) check(node string) error {
	if node == "" {
		return fmt.Errorf("replset: no node named: %w", errdefs.ErrInvalidArgument)
	}
	return s.Validate()
}

// notFound is the error of an event about a node that holds no replica.
func notFound(node string) error {
	return fmt.Errorf("replset: no replica on %s: %w", node, errdefs.ErrNotFound)
}

// Attach records that the engine starts on node, a new epoch that fences
// every older engine (invariant 3): the engine opens each replica at the
// new epoch before it serves I/O, so a replica that has seen it refuses the
// old engine's writes. Attaching on another node while an engine is
// recorded is a failover. If the previous engine did not detach cleanly
// (Dirty), the action list has an ActionResyncDirty that the new engine
// carries out before serving I/O (invariant 6).
//
// Attach on the node already running the engine changes nothing: it is a
// retried request. An engine that restarted on the same node after a crash
// must be reported with EngineCrashed first, or it would skip the resync.
// Attach is refused when no replica is in-sync: no replica is known to
// hold every acknowledged write.
func (s State) Attach(node string) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if s.Engine == node {
		return s, nil, nil
	}
	if len(s.InSync()) == 0 {
		return s, nil, fmt.Errorf("replset: cannot attach on %s: no replica is in-sync: %w", node, errdefs.ErrFailedPrecondition)
	}
	n := s.clone()
	n.Engine = node
	n.Dirty = true
	var acts []Action
	if s.Dirty {
		src := n.source()
		var targets []string
		for _, r := range n.Replicas {
			if r.Node != src && r.Mode != Out {
				targets = append(targets, r.Node)
			}
		}
		if len(targets) > 0 {
			acts = append(acts, Action{Kind: ActionResyncDirty, Node: node, Source: src, Targets: targets})
		}
	}
	n, acts = n.settle(s, acts)
	return n, acts, nil
}

// Detach records that the engine on node stopped cleanly: it flushed every
// write to every in-sync replica and cleared their dirty-region logs, so
// the replicas are identical and the next Attach needs no resync. It
// changes nothing when no engine is attached (a retried request, or one
// that came after EngineCrashed), and is refused from any node but the
// engine's: that engine was fenced by a failover, and its writes since are
// not on the replicas.
func (s State) Detach(node string) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if s.Engine == "" {
		return s, nil, nil
	}
	if s.Engine != node {
		return s, nil, fmt.Errorf("replset: detach from %s, but the engine is on %s (epoch %d): %w", node, s.Engine, s.Epoch, errdefs.ErrFailedPrecondition)
	}
	n := s.clone()
	n.Engine, n.Dirty = "", false
	n, acts := n.settle(s, nil)
	return n, acts, nil
}

// EngineCrashed records that the engine on node stopped without detaching
// (its process died, or its node did): the volume is detached and stays
// Dirty, so the next Attach, wherever it is, resyncs the regions that had
// writes in flight (invariant 6). The epoch does not change: a crashed
// engine that is in fact still running is fenced by that next Attach. It
// changes nothing when no engine is attached, and is refused for any node
// but the engine's (a stale report).
func (s State) EngineCrashed(node string) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if s.Engine == "" {
		return s, nil, nil
	}
	if s.Engine != node {
		return s, nil, fmt.Errorf("replset: engine crash reported on %s, but the engine is on %s (epoch %d): %w", node, s.Engine, s.Epoch, errdefs.ErrFailedPrecondition)
	}
	n := s.clone()
	n.Engine = ""
	n, acts := n.settle(s, nil)
	return n, acts, nil
}

// ReplicaFailed records that a write to the replica on node failed or
// timed out: the replica goes Out since now and the engine stops writing to
// it. When it was in-sync this raises the epoch, and the engine must not
// acknowledge the write that skipped it until the new State has committed
// (invariant 2). Catching-up replicas rebuilding from it get a new source.
//
// It is refused with ErrLastInSync when node holds the last in-sync
// replica: the engine fails the write instead (invariant 1). A replica
// already out is left as it is.
func (s State) ReplicaFailed(node string, now time.Time) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	i := s.index(node)
	if i < 0 {
		return s, nil, notFound(node)
	}
	switch s.Replicas[i].Mode {
	case Out:
		return s, nil, nil
	case InSync:
		if len(s.InSync()) == 1 {
			return s, nil, fmt.Errorf("replset: replica on %s cannot fail out: %w", node, ErrLastInSync)
		}
	}
	n := s.clone()
	n.Replicas[i] = Replica{Node: node, Mode: Out, Since: now}
	n, acts := n.settle(s, nil)
	return n, acts, nil
}

// ReplicaReturned records that the node of an out replica is reachable
// again: the replica is CatchingUp since now and an ActionRebuild copies
// what it lacks from the source (the engine's node when it is in-sync, else
// the first in-sync replica by name), so that it catches up by copying only
// what it lacks while writes continue (invariant 5). For a catching-up
// replica it asks for the rebuild again (a rebuild is restartable); for an
// in-sync one it does nothing. For a retired node it asks for the deletion
// of the old replica's data (ActionDeleteReplica).
func (s State) ReplicaReturned(node string, now time.Time) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if slices.Contains(s.Retired, node) {
		return s, []Action{{Kind: ActionDeleteReplica, Node: node}}, nil
	}
	i := s.index(node)
	if i < 0 {
		return s, nil, notFound(node)
	}
	switch r := s.Replicas[i]; r.Mode {
	case InSync:
		return s, nil, nil
	case CatchingUp:
		return s, []Action{{Kind: ActionRebuild, Node: node, Source: r.Source}}, nil
	}
	n := s.clone()
	src := n.source()
	if src == "" {
		return s, nil, fmt.Errorf("replset: replica on %s cannot catch up: no replica is in-sync: %w", node, errdefs.ErrFailedPrecondition)
	}
	n.Replicas[i] = Replica{Node: node, Mode: CatchingUp, Since: now, Source: src}
	n, acts := n.settle(s, []Action{{Kind: ActionRebuild, Node: node, Source: src}})
	return n, acts, nil
}

// CaughtUp records that the rebuild of the catching-up replica on node is
// done and the engine writes to it: it joins the in-sync set since now,
// which raises the epoch, so that from the new epoch on the engine
// acknowledges writes only once the replica has them (invariant 1). It does
// nothing for an in-sync replica and is refused for an out one (the report
// is stale: the replica failed since).
func (s State) CaughtUp(node string, now time.Time) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	i := s.index(node)
	if i < 0 {
		return s, nil, notFound(node)
	}
	switch s.Replicas[i].Mode {
	case InSync:
		return s, nil, nil
	case Out:
		return s, nil, fmt.Errorf("replset: replica on %s reported caught up, but it is out: %w", node, errdefs.ErrFailedPrecondition)
	}
	n := s.clone()
	n.Replicas[i] = Replica{Node: node, Mode: InSync, Since: now}
	n, acts := n.settle(s, nil)
	return n, acts, nil
}

// Tick is the passing of time, now. Each replica out for replaceAfter or
// longer is removed from the set and retired: its data is deleted when its
// node is back (ReplicaReturned). The epoch does not change, as no in-sync
// replica leaves. Then, whenever the set has fewer replicas than wanted,
// Tick asks for an ActionPlace of the missing ones, keeping the current
// replicas and avoiding the retired nodes; it asks again at every Tick
// until AddReplica fills the set, so a placement that failed is retried.
func (s State) Tick(now time.Time, replaceAfter time.Duration) (State, []Action, error) {
	if err := s.Validate(); err != nil {
		return s, nil, err
	}
	if replaceAfter <= 0 {
		return s, nil, fmt.Errorf("replset: replace-after %v is not positive: %w", replaceAfter, errdefs.ErrInvalidArgument)
	}
	n := s.clone()
	n.Replicas = slices.DeleteFunc(n.Replicas, func(r Replica) bool {
		if r.Mode == Out && now.Sub(r.Since) >= replaceAfter {
			n.Retired = append(n.Retired, r.Node)
			return true
		}
		return false
	})
	slices.Sort(n.Retired)
	n, acts := n.settle(s, n.place(nil))
	return n, acts, nil
}

// place appends to acts the ActionPlace of the replicas s lacks, if any.
func (s State) place(acts []Action) []Action {
	if missing := s.Want - len(s.Replicas); missing > 0 {
		keep := make([]string, len(s.Replicas))
		for i, r := range s.Replicas {
			keep[i] = r.Node
		}
		acts = append(acts, Action{Kind: ActionPlace, Count: missing, Keep: keep, Avoid: slices.Clone(s.Retired)})
	}
	return acts
}

// AddReplica records a new replica on node, chosen by placement: it is
// CatchingUp since now, and an ActionRebuild fills it from the source (as
// for ReplicaReturned). It is refused when the set already has Want
// replicas (raise Want with SetReplicas first), when node holds one, and
// when node is retired (its old data is not deleted yet).
func (s State) AddReplica(node string, now time.Time) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if s.Has(node) {
		return s, nil, fmt.Errorf("replset: %s already holds a replica: %w", node, errdefs.ErrAlreadyExists)
	}
	if slices.Contains(s.Retired, node) {
		return s, nil, fmt.Errorf("replset: %s still holds a retired replica's data: %w", node, errdefs.ErrFailedPrecondition)
	}
	if len(s.Replicas) >= s.Want {
		return s, nil, fmt.Errorf("replset: the volume already has the %d replicas it wants: %w", s.Want, errdefs.ErrFailedPrecondition)
	}
	src := s.source()
	if src == "" {
		return s, nil, fmt.Errorf("replset: a replica on %s cannot catch up: no replica is in-sync: %w", node, errdefs.ErrFailedPrecondition)
	}
	n := s.clone()
	n.Replicas = append(n.Replicas, Replica{Node: node, Mode: CatchingUp, Since: now, Source: src})
	slices.SortFunc(n.Replicas, byNode)
	n, acts := n.settle(s, []Action{{Kind: ActionRebuild, Node: node, Source: src}})
	return n, acts, nil
}

// RemoveReplica removes the replica on node and wants one replica fewer
// (ha-update down, naming the replica). Removing an in-sync replica raises
// the epoch (invariant 2). The replica is retired: an ActionDeleteReplica
// deletes its data now, or, for an out replica, when its node is back. It
// is refused with ErrLastInSync for the last in-sync replica, and for the
// only replica (delete the volume instead).
func (s State) RemoveReplica(node string) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	if !s.Has(node) {
		return s, nil, notFound(node)
	}
	if len(s.Replicas) == 1 {
		return s, nil, fmt.Errorf("replset: the replica on %s is the volume's only one: %w", node, errdefs.ErrFailedPrecondition)
	}
	if in := s.InSync(); len(in) == 1 && in[0] == node {
		return s, nil, fmt.Errorf("replset: replica on %s cannot be removed: %w", node, ErrLastInSync)
	}
	n := s.clone()
	n.Want = max(1, n.Want-1)
	acts := n.retire(node)
	n, acts = n.settle(s, acts)
	return n, acts, nil
}

// retire removes the replica on node from s and adds node to Retired,
// returning the ActionDeleteReplica to do now, if the replica is not out.
func (s *State) retire(node string) []Action {
	i := s.index(node)
	r := s.Replicas[i]
	s.Replicas = slices.Delete(s.Replicas, i, i+1)
	s.Retired = append(s.Retired, node)
	slices.Sort(s.Retired)
	if r.Mode == Out {
		return nil
	}
	return []Action{{Kind: ActionDeleteReplica, Node: node}}
}

// SetReplicas sets how many replicas the volume wants (ha-update), 1 to
// placement.MaxReplicas. Raising it asks for an ActionPlace of the new
// replicas. Lowering it removes replicas at once, keeping first the
// engine's in-sync replica, then the other in-sync ones by node name, then
// catching-up ones, then out ones; so the in-sync set never empties, and it
// raises the epoch when an in-sync replica goes (invariant 2). Removed
// replicas are retired as by RemoveReplica.
func (s State) SetReplicas(want int) (State, []Action, error) {
	if err := s.Validate(); err != nil {
		return s, nil, err
	}
	if want < 1 || want > placement.MaxReplicas {
		return s, nil, fmt.Errorf("replset: %d replicas requested, a volume has 1 to %d: %w", want, placement.MaxReplicas, errdefs.ErrInvalidArgument)
	}
	n := s.clone()
	n.Want = want
	var acts []Action
	if len(n.Replicas) > want {
		rank := func(r Replica) int {
			switch {
			case r.Mode == InSync && r.Node == s.Engine:
				return 0
			case r.Mode == InSync:
				return 1
			case r.Mode == CatchingUp:
				return 2
			default:
				return 3
			}
		}
		order := slices.Clone(n.Replicas)
		slices.SortStableFunc(order, func(a, b Replica) int { return cmp.Compare(rank(a), rank(b)) })
		for _, r := range order[want:] {
			acts = append(acts, n.retire(r.Node)...)
		}
	}
	n, acts = n.settle(s, n.place(acts))
	return n, acts, nil
}

// ReplicaDeleted records that the retired replica's data on node is gone:
// node may get a replica of the volume again. It changes nothing for a node
// that is not retired (a retried report).
func (s State) ReplicaDeleted(node string) (State, []Action, error) {
	if err := s.check(node); err != nil {
		return s, nil, err
	}
	i := slices.Index(s.Retired, node)
	if i < 0 {
		return s, nil, nil
	}
	n := s.clone()
	n.Retired = slices.Delete(n.Retired, i, i+1)
	n, acts := n.settle(s, nil)
	return n, acts, nil
}
