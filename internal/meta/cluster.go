package meta

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// MaxMembers is how many nodes of a cluster run an embedded etcd member:
// three members keep a quorum when one of them is lost. The nodes that
// join after them are etcd clients of these three.
const MaxMembers = 3

const joinTokenKey = prefix + "cluster/join-token"

// JoinToken returns the token that nodes give to join the cluster, making
// a random one (32 bytes, hex) the first time. Every caller, concurrent or
// not, gets the same token. It is kept in etcd as is, since admins read it
// back (strata cluster token); whoever reads etcd can join.
func (s *Store) JoinToken(ctx context.Context) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return s.getOrCreate(ctx, joinTokenKey, hex.EncodeToString(b))
}

// getOrCreate stores value at key unless the key exists, and returns what
// the key holds afterwards.
func (s *Store) getOrCreate(ctx context.Context, key, value string) (string, error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, value)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", etcdErr(err)
	}
	if resp.Succeeded {
		return value, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return "", fmt.Errorf("meta: %s vanished: %w", key, ErrConflict)
	}
	return string(kvs[0].Value), nil
}

// Member is one member of the etcd cluster.
type Member struct {
	ID uint64
	// Name is the member's name, the name of the node that runs it; empty
	// while a member that was added has not started yet.
	Name       string
	PeerURLs   []string
	ClientURLs []string
	Learner    bool
}

// Started says whether the member has started (and published its name).
func (m Member) Started() bool { return m.Name != "" }

// Members lists the members of the etcd cluster the store uses.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	resp, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, etcdErr(err)
	}
	return members(resp.Members), nil
}

func members[M interface {
	GetID() uint64
	GetName() string
	GetPeerURLs() []string
	GetClientURLs() []string
	GetIsLearner() bool
}](in []M) []Member {
	out := make([]Member, 0, len(in))
	for _, m := range in {
		out = append(out, Member{ID: m.GetID(), Name: m.GetName(), PeerURLs: m.GetPeerURLs(),
			ClientURLs: m.GetClientURLs(), Learner: m.GetIsLearner()})
	}
	return out
}

// JoinAction is how a node joins the cluster (see DecideJoin).
type JoinAction int

// What DecideJoin decides.
const (
	// JoinAsClient: the node uses the cluster's etcd as a client only.
	JoinAsClient JoinAction = iota + 1
	// JoinAsNewMember: the node's embedded member is added to the etcd
	// cluster (as a learner, see AdmitNode) and the node starts it.
	JoinAsNewMember
	// JoinAsAddedMember: an earlier attempt of the node added its member
	// and did not start it (the node stopped in between); the node starts
	// it now, nothing is added.
	JoinAsAddedMember
)

func (a JoinAction) String() string {
	switch a {
	case JoinAsClient:
		return "etcd client"
	case JoinAsNewMember:
		return "new etcd member"
	case JoinAsAddedMember:
		return "added etcd member"
	}
	return fmt.Sprintf("JoinAction(%d)", int(a))
}

// DecideJoin says how node joins a cluster whose etcd has members, given
// the peer URL its embedded member would listen on (empty when it offers
// no member). Nodes become members while the cluster has fewer than
// MaxMembers, and clients after. It refuses (errdefs.ErrAlreadyExists) a
// node whose name or peer URL a started member has, since a member's data
// cannot be made again from nothing; (errdefs.ErrUnavailable, retry later)
// any node while another added member has not started, since adding one
// more would leave the cluster without a quorum; and
// (errdefs.ErrFailedPrecondition) a new member on loopback in a cluster
// whose members are not, or the reverse.
func DecideJoin(ms []Member, node, peerURL string) (JoinAction, error) {
	for _, m := range ms {
		if m.Started() && m.Name == node {
			return 0, fmt.Errorf("meta: node %q is already etcd member %x of the cluster (peer %s): a node joins once, restart it without --join; to make it again from an empty data directory, remove the member first: %w",
				node, m.ID, strings.Join(m.PeerURLs, ","), errdefs.ErrAlreadyExists)
		}
	}
	if peerURL == "" {
		return JoinAsClient, nil
	}
	pending := ""
	for _, m := range ms {
		if slices.Contains(m.PeerURLs, peerURL) {
			if m.Started() {
				return 0, fmt.Errorf("meta: etcd peer URL %s is already member %q's: give node %q another address (--ip or --etcd-peer-url): %w",
					peerURL, m.Name, node, errdefs.ErrAlreadyExists)
			}
			return JoinAsAddedMember, nil
		}
		if !m.Started() || m.Learner {
			pending = strings.Join(m.PeerURLs, ",")
		}
	}
	if pending != "" {
		return 0, fmt.Errorf("meta: etcd member %s is joining the cluster (added, not yet started and caught up); retry once its node is up: %w", pending, errdefs.ErrUnavailable)
	}
	if len(ms) >= MaxMembers {
		return JoinAsClient, nil
	}
	// Members on loopback are on one machine: a member elsewhere could
	// not reach them, nor they it.
	if lb, ok := loopbackURL(peerURL); ok {
		for _, m := range ms {
			for _, u := range m.PeerURLs {
				if mlb, ok := loopbackURL(u); ok && mlb != lb {
					return 0, fmt.Errorf("meta: etcd peer URL %s of node %q and %s of member %q are not both on loopback: give every node of a cluster on several machines its address with --ip: %w",
						peerURL, node, u, m.Name, errdefs.ErrFailedPrecondition)
				}
			}
		}
	}
	return JoinAsNewMember, nil
}

// loopbackURL says whether the host of URL u is a loopback address; ok is
// false when that is unknown (a host name other than localhost).
func loopbackURL(u string) (loopback, ok bool) {
	p, err := url.Parse(u)
	if err != nil {
		return false, false
	}
	h := p.Hostname()
	if h == "localhost" {
		return true, true
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return false, false
	}
	return ip.IsLoopback(), true
}

// InitialCluster is the initial-cluster string ("name=peerURL,...") an
// embedded member started for node on peerURL gives etcd to join the
// cluster of ms, which lists it already (unstarted, so without a name).
func InitialCluster(ms []Member, node, peerURL string) string {
	var parts []string
	for _, m := range ms {
		name := m.Name
		if !m.Started() && slices.Contains(m.PeerURLs, peerURL) {
			name = node
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// ClientURLs returns the client URLs of the started voting members, the
// etcd endpoints of the cluster (learners serve no clients).
func ClientURLs(ms []Member) []string {
	var out []string
	for _, m := range ms {
		if !m.Learner {
			out = append(out, m.ClientURLs...)
		}
	}
	return out
}

// Admission says how a node joins the cluster (see AdmitNode).
type Admission struct {
	Action JoinAction
	// Endpoints are the client URLs of the cluster's etcd.
	Endpoints []string
	// InitialCluster is set for JoinAsNewMember and JoinAsAddedMember: the
	// initial-cluster string the node's embedded member starts with.
	InitialCluster string
}

// AdmitNode decides how node joins the cluster (DecideJoin) and, when it
// is to become a member, adds its member, listening on peerURL, to the
// etcd cluster as a learner: it does not count in the quorum until it has
// started, caught up with the leader and been promoted (Open does that),
// so that the cluster keeps answering while the node starts. With an
// external etcd (Config.External) every node is a client and nothing is
// added.
func (s *Store) AdmitNode(ctx context.Context, node, peerURL string) (Admission, error) {
	if s.external {
		return Admission{Action: JoinAsClient, Endpoints: s.Endpoints()}, nil
	}
	ms, err := s.Members(ctx)
	if err != nil {
		return Admission{}, err
	}
	action, err := DecideJoin(ms, node, peerURL)
	if err != nil {
		return Admission{}, err
	}
	switch action {
	case JoinAsClient:
		return Admission{Action: action, Endpoints: ClientURLs(ms)}, nil
	case JoinAsNewMember:
		resp, err := s.cli.MemberAddAsLearner(ctx, []string{peerURL})
		if err != nil {
			return Admission{}, memberAddErr(peerURL, err)
		}
		ms = members(resp.Members)
	}
	return Admission{Action: action, Endpoints: ClientURLs(ms), InitialCluster: InitialCluster(ms, node, peerURL)}, nil
}

// memberAddErr says why etcd refused a member: the refusals that pass
// (a member just started, not yet connected long enough) are
// errdefs.ErrUnavailable, to retry.
func memberAddErr(peerURL string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, rpctypes.ErrPeerURLExist):
		return fmt.Errorf("meta: add etcd member %s: %v: %w", peerURL, err, errdefs.ErrAlreadyExists)
	}
	return fmt.Errorf("meta: add etcd member %s: %v: %w", peerURL, err, errdefs.ErrUnavailable)
}
