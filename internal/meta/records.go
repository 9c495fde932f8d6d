package meta

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
	"github.com/strata-storage/strata/internal/replset"
)

// prefix is the root of every Strata key; v1 is the record format's version.
const prefix = "/strata/v1/"

// ErrConflict is returned by a compare-and-swap whose record changed (or
// went away) since it was read: read it again and retry.
var ErrConflict = fmt.Errorf("meta: record changed concurrently, retry: %w", errdefs.ErrFailedPrecondition)

// Record states shared by volumes and snapshots. A record is written in
// state StateCreating before the data exists and set to StateReady after;
// StateDeleting is set before the data goes and the record is removed
// after. A crash in between leaves a state that startup reconciliation
// finishes.
const (
	StateCreating = "creating"
	StateReady    = "ready"
	StateDeleting = "deleting"
)

// Volume is the desired state of one volume.
type Volume struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Parent  string    `json:"parent,omitempty"` // "VOL@SNAP" for a clone
	Node    string    `json:"node"`             // node holding the replica and engine
	Created time.Time `json:"created"`
	State   string    `json:"state"`
	// Labels are the free-form key/value metadata given at creation.
	Labels map[string]string `json:"labels,omitempty"`
	// QoS is the volume's I/O limits; zero (no limit) in records written
	// before QoS existed.
	QoS qos.Limits `json:"qos,omitzero"`
	// Tenant owns the volume (a developer's clone); empty for volumes no
	// tenant owns (production volumes, templates' internals), which only
	// admins manage and viewers read.
	Tenant string `json:"tenant,omitempty"`
	// Replication is the volume's replica set: its replicas' nodes and
	// modes, the epoch and the engine's node, changed only by
	// compare-and-swap of this record (see internal/replset). Zero for
	// volumes made before replication, whose one replica is on Node.
	Replication replset.State `json:"replication,omitzero"`
	// Rev is the record's etcd mod revision, set by reads and writes; the
	// compare-and-swap of Update and Delete is on it.
	Rev int64 `json:"-"`
}

// Replicated says whether the volume has a replica set (every volume made
// since replication landed, whatever its number of replicas).
func (v Volume) Replicated() bool { return v.Replication.Want > 0 }

// Snapshot is one snapshot of a volume.
type Snapshot struct {
	Volume  string    `json:"volume"`
	Name    string    `json:"name"`
	Size    int64     `json:"size"` // volume size when taken
	Created time.Time `json:"created"`
	State   string    `json:"state"`
	Rev     int64     `json:"-"`
}

// Node is a member of the cluster, rewritten by itself at every heartbeat.
type Node struct {
	Name string `json:"name"`
	// Addresses by purpose: "api", "nbd".
	Addresses map[string]string `json:"addresses,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Heartbeat time.Time         `json:"heartbeat"`
	// Pool space at the last heartbeat.
	PoolCapacity  int64 `json:"poolCapacity,omitempty"`
	PoolAvailable int64 `json:"poolAvailable,omitempty"`
	PoolAllocated int64 `json:"poolAllocated,omitempty"`
	Rev           int64 `json:"-"`
}

// Roles of API tokens (see internal/server's access rules).
const (
	// RoleAdmin may make every call.
	RoleAdmin = "admin"
	// RoleDeveloper manages the volumes of its tenant only.
	RoleDeveloper = "developer"
	// RoleViewer may read everything's metadata and change nothing.
	RoleViewer = "viewer"
)

// Token is an API token. Only the SHA-256 of the token is stored.
type Token struct {
	Hash string `json:"hash"` // hex SHA-256 of the token (see HashToken)
	Role string `json:"role"`
	// User is the user the token belongs to (see User); empty for the
	// admin token strata up makes.
	User string `json:"user,omitempty"`
	// Tenant is the user's tenant (developers only).
	Tenant  string    `json:"tenant,omitempty"`
	Created time.Time `json:"created"`
	Rev     int64     `json:"-"`
}

// HashToken returns the hex SHA-256 of token, the form tokens are stored in.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func volumeKey(name string) string           { return prefix + "volumes/" + name }
func snapshotPrefix(volume string) string    { return prefix + "snapshots/" + volume + "/" }
func snapshotKey(volume, name string) string { return snapshotPrefix(volume) + name }
func nodeKey(name string) string             { return prefix + "nodes/" + name }
func tokenKey(hash string) string            { return prefix + "tokens/" + hash }

const clusterIDKey = prefix + "cluster/id"

// GetVolume returns the record of volume name; errdefs.ErrNotFound when missing.
func (s *Store) GetVolume(ctx context.Context, name string) (Volume, error) {
	var v Volume
	rev, err := s.get(ctx, volumeKey(name), &v)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %q: %w", name, err)
	}
	v.Rev = rev
	return v, nil
}

// ListVolumes returns every volume record, sorted by name.
func (s *Store) ListVolumes(ctx context.Context) ([]Volume, error) {
	return list(ctx, s, prefix+"volumes/", func(v *Volume, rev int64) { v.Rev = rev })
}

// CreateVolume writes a new volume record; errdefs.ErrAlreadyExists when
// one exists. The returned copy carries the record's revision.
func (s *Store) CreateVolume(ctx context.Context, v Volume) (Volume, error) {
	rev, err := s.put(ctx, volumeKey(v.Name), v, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	v.Rev = rev
	return v, nil
}

// UpdateVolume replaces the record if it is still at revision v.Rev
// (ErrConflict otherwise) and returns it with its new revision.
func (s *Store) UpdateVolume(ctx context.Context, v Volume) (Volume, error) {
	if v.Rev == 0 {
		return Volume{}, fmt.Errorf("meta: update of volume %q without a revision: %w", v.Name, errdefs.ErrInvalidArgument)
	}
	rev, err := s.put(ctx, volumeKey(v.Name), v, v.Rev)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	v.Rev = rev
	return v, nil
}

// DeleteVolume removes the record, if still at revision v.Rev (ErrConflict
// otherwise), together with its snapshot records, in one transaction.
func (s *Store) DeleteVolume(ctx context.Context, v Volume) error {
	key := volumeKey(v.Name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", v.Rev)).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(snapshotPrefix(v.Name), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return etcdErr(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("volume %q: %w", v.Name, ErrConflict)
	}
	return nil
}

// GetSnapshot returns the record of snapshot volume@name; errdefs.ErrNotFound when missing.
func (s *Store) GetSnapshot(ctx context.Context, volume, name string) (Snapshot, error) {
	var sn Snapshot
	rev, err := s.get(ctx, snapshotKey(volume, name), &sn)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", volume, name, err)
	}
	sn.Rev = rev
	return sn, nil
}

// ListSnapshots returns the snapshot records of volume, or of every volume
// when volume is empty, sorted by volume then name.
func (s *Store) ListSnapshots(ctx context.Context, volume string) ([]Snapshot, error) {
	p := prefix + "snapshots/"
	if volume != "" {
		p = snapshotPrefix(volume)
	}
	return list(ctx, s, p, func(sn *Snapshot, rev int64) { sn.Rev = rev })
}

// CreateSnapshot writes a new snapshot record; errdefs.ErrAlreadyExists
// when one exists.
func (s *Store) CreateSnapshot(ctx context.Context, sn Snapshot) (Snapshot, error) {
	rev, err := s.put(ctx, snapshotKey(sn.Volume, sn.Name), sn, 0)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", sn.Volume, sn.Name, err)
	}
	sn.Rev = rev
	return sn, nil
}

// UpdateSnapshot replaces the record if it is still at revision sn.Rev.
func (s *Store) UpdateSnapshot(ctx context.Context, sn Snapshot) (Snapshot, error) {
	if sn.Rev == 0 {
		return Snapshot{}, fmt.Errorf("meta: update of snapshot %s@%s without a revision: %w", sn.Volume, sn.Name, errdefs.ErrInvalidArgument)
	}
	rev, err := s.put(ctx, snapshotKey(sn.Volume, sn.Name), sn, sn.Rev)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", sn.Volume, sn.Name, err)
	}
	sn.Rev = rev
	return sn, nil
}

// DeleteSnapshot removes the record if it is still at revision sn.Rev.
func (s *Store) DeleteSnapshot(ctx context.Context, sn Snapshot) error {
	if err := s.del(ctx, snapshotKey(sn.Volume, sn.Name), sn.Rev); err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", sn.Volume, sn.Name, err)
	}
	return nil
}

// PutNode writes the record of node n unconditionally: each node owns its record.
func (s *Store) PutNode(ctx context.Context, n Node) (Node, error) {
	rev, err := s.overwrite(ctx, nodeKey(n.Name), n)
	if err != nil {
		return Node{}, err
	}
	n.Rev = rev
	return n, nil
}

// GetNode returns the record of node name; errdefs.ErrNotFound when missing.
func (s *Store) GetNode(ctx context.Context, name string) (Node, error) {
	var n Node
	rev, err := s.get(ctx, nodeKey(name), &n)
	if err != nil {
		return Node{}, fmt.Errorf("node %q: %w", name, err)
	}
	n.Rev = rev
	return n, nil
}

// ListNodes returns every node record, sorted by name.
func (s *Store) ListNodes(ctx context.Context) ([]Node, error) {
	return list(ctx, s, prefix+"nodes/", func(n *Node, rev int64) { n.Rev = rev })
}

// CreateToken stores a token by its hash (see HashToken) with role.
// errdefs.ErrAlreadyExists when that hash is stored already.
func (s *Store) CreateToken(ctx context.Context, hash, role string) (Token, error) {
	if len(hash) != sha256.Size*2 {
		return Token{}, fmt.Errorf("meta: token hash must be a hex sha-256: %w", errdefs.ErrInvalidArgument)
	}
	t := Token{Hash: hash, Role: role, Created: time.Now().UTC()}
	rev, err := s.put(ctx, tokenKey(hash), t, 0)
	if err != nil {
		return Token{}, fmt.Errorf("token: %w", err)
	}
	t.Rev = rev
	return t, nil
}

// ListTokens returns every stored token hash and its role.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	return list(ctx, s, prefix+"tokens/", func(t *Token, rev int64) { t.Rev = rev })
}

// DeleteToken removes the token stored under hash.
func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	return s.del(ctx, tokenKey(hash), 0)
}

// ClusterID returns the cluster's id, making a random one the first time.
// Every caller, concurrent or not, gets the same id.
func (s *Store) ClusterID(ctx context.Context) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(clusterIDKey), "=", 0)).
		Then(clientv3.OpPut(clusterIDKey, id)).
		Else(clientv3.OpGet(clusterIDKey)).
		Commit()
	if err != nil {
		return "", etcdErr(err)
	}
	if resp.Succeeded {
		return id, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return "", fmt.Errorf("meta: cluster id vanished: %w", ErrConflict)
	}
	return string(kvs[0].Value), nil
}

// get reads key into v and returns its mod revision.
func (s *Store) get(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, etcdErr(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, errdefs.ErrNotFound
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("meta: record %s is corrupt: %v", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// list reads every record under p, in key order.
func list[T any](ctx context.Context, s *Store, p string, setRev func(*T, int64)) ([]T, error) {
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, etcdErr(err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("meta: record %s is corrupt: %v", kv.Key, err)
		}
		setRev(&v, kv.ModRevision)
		out = append(out, v)
	}
	return out, nil
}

// put writes v at key: only if the key is absent when rev is 0
// (errdefs.ErrAlreadyExists otherwise), only if its mod revision is still
// rev when rev > 0 (ErrConflict otherwise). It returns the new revision.
func (s *Store) put(ctx context.Context, key string, v any, rev int64) (int64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil {
		return 0, etcdErr(err)
	}
	if !resp.Succeeded {
		if rev == 0 {
			return 0, errdefs.ErrAlreadyExists
		}
		return 0, ErrConflict
	}
	return resp.Header.Revision, nil
}

// overwrite writes v at key whatever is there, and returns the new revision.
func (s *Store) overwrite(ctx context.Context, key string, v any) (int64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	resp, err := s.cli.Put(ctx, key, string(data))
	if err != nil {
		return 0, etcdErr(err)
	}
	return resp.Header.Revision, nil
}

// del removes key if its mod revision is still rev (any revision when rev
// is 0). A missing key is errdefs.ErrNotFound.
func (s *Store) del(ctx context.Context, key string, rev int64) error {
	if rev == 0 {
		resp, err := s.cli.Delete(ctx, key)
		if err != nil {
			return etcdErr(err)
		}
		if resp.Deleted == 0 {
			return errdefs.ErrNotFound
		}
		return nil
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return etcdErr(err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// etcdErr marks etcd failures as errdefs.ErrUnavailable, except the
// caller's own cancellation.
func etcdErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("meta: etcd: %v: %w", err, errdefs.ErrUnavailable)
}
