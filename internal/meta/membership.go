package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-storage/strata/internal/atomicfile"
	"github.com/strata-storage/strata/internal/errdefs"
)

// MembershipFile is the name of the file, in a node's data directory, in
// which a node that joined a cluster keeps how it joined (see Membership).
const MembershipFile = "cluster.json"

// Membership is what a node that joined a cluster (strata up --join)
// remembers in its data directory, so that it restarts without --join: it
// starts its embedded etcd member again, or connects to the cluster's
// endpoints as a client. The first node of a cluster has none: it runs
// the member that founded the etcd cluster.
type Membership struct {
	ClusterID string `json:"clusterId"`
	// Node is the node's name, which is also its member's name.
	Node string `json:"node"`
	// EtcdMember says the node runs an embedded etcd member; otherwise it
	// is an etcd client of Endpoints.
	EtcdMember bool `json:"etcdMember"`
	// PeerURL and ClientURL of the node's member (members only).
	PeerURL   string `json:"peerURL,omitempty"`
	ClientURL string `json:"clientURL,omitempty"`
	// InitialCluster the member was started with (members only).
	InitialCluster string `json:"initialCluster,omitempty"`
	// Endpoints are the client URLs of the cluster's etcd when the node
	// joined.
	Endpoints []string `json:"endpoints"`
	// JoinedVia is the API address of the node that admitted this one.
	JoinedVia string    `json:"joinedVia"`
	Joined    time.Time `json:"joined"`
}

// LoadMembership reads DIR/cluster.json; nil and no error when there is
// none (the node never joined a cluster).
func LoadMembership(dir string) (*Membership, error) {
	path := filepath.Join(dir, MembershipFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	var m Membership
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("meta: %s is corrupt (%v): %w", path, err, errdefs.ErrFailedPrecondition)
	}
	if m.ClusterID == "" || m.Node == "" || (m.EtcdMember && (m.PeerURL == "" || m.InitialCluster == "")) || (!m.EtcdMember && len(m.Endpoints) == 0) {
		return nil, fmt.Errorf("meta: %s is incomplete: %w", path, errdefs.ErrFailedPrecondition)
	}
	return &m, nil
}

// SaveMembership writes DIR/cluster.json crash-safely (temporary file,
// fsync, rename, fsync of the directory).
func SaveMembership(dir string, m Membership) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, MembershipFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("meta: save membership: %w", err)
	}
	return nil
}
