// Package meta is Strata's control-plane store: typed records (volumes,
// snapshots, nodes, tokens, the cluster id) kept as JSON in etcd under
// /strata/v1/, with compare-and-swap updates on each record's mod revision.
//
// A Store either runs an embedded etcd member in a directory of the node
// (the first node of a cluster founds a one-member etcd cluster; the next
// two that join add their own members, see AdmitNode) or connects to
// endpoints: an external etcd cluster, or the members of the Strata cluster
// a node joined as an etcd client. etcd is the one source of truth for what
// exists in the cluster; nothing here caches records.
package meta

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Default loopback addresses of the embedded etcd member.
const (
	DefaultClientURL = "http://127.0.0.1:7421"
	DefaultPeerURL   = "http://127.0.0.1:7422"
)

// DefaultStartTimeout bounds how long Open waits for the embedded member to
// be ready (a restart replays its write-ahead log first).
const DefaultStartTimeout = 60 * time.Second

// Config says where the store lives.
type Config struct {
	// Endpoints of the etcd cluster to use as a client. When set, nothing
	// is embedded and Dir, ClientURL, PeerURL and InitialCluster are
	// ignored.
	Endpoints []string
	// External says that Endpoints are an etcd cluster Strata does not
	// manage (strata up --etcd-endpoints): nodes that join never become
	// its members. False for a node that joined a Strata cluster as an
	// etcd client, whose Endpoints are the cluster's embedded members.
	External bool
	// Dir holds the embedded member's data and its log file (etcd.log).
	Dir string
	// Name of the embedded member; "default" when empty.
	Name string
	// ClientURL and PeerURL the embedded member listens on (and advertises);
	// DefaultClientURL and DefaultPeerURL when empty. The embedded member
	// has no TLS and no authentication: keep them on loopback, or, for a
	// cluster, on a private network that only the cluster's nodes reach.
	ClientURL string
	PeerURL   string
	// InitialCluster ("name=peerURL,...", every member of the cluster
	// including this one) makes the embedded member join an existing
	// cluster that already lists it (see AdmitNode); when empty the member
	// founds a new one-member cluster. Once the member has data in Dir,
	// etcd ignores both and restarts from its data.
	InitialCluster string
	// StartTimeout bounds the wait for the embedded member; DefaultStartTimeout when 0.
	StartTimeout time.Duration
}

// Store is the typed record store. It is safe for concurrent use.
type Store struct {
	etcd      *embed.Etcd // nil with endpoints
	external  bool
	cli       *clientv3.Client
	endpoints []string
}

// Open starts the embedded etcd member (or connects to cfg.Endpoints) and
// returns the store once etcd answers. A member that is not ready within
// the timeout is stopped and Open fails with errdefs.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{external: cfg.External && len(cfg.Endpoints) > 0}
	if len(cfg.Endpoints) > 0 {
		s.endpoints = cfg.Endpoints
	} else {
		e, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		s.etcd = e
		for _, u := range e.Config().AdvertiseClientUrls {
			s.endpoints = append(s.endpoints, u.String())
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	})
	if err != nil {
		s.stopEmbedded()
		return nil, fmt.Errorf("meta: connect to etcd %s: %v: %w", strings.Join(s.endpoints, ","), err, errdefs.ErrUnavailable)
	}
	s.cli = cli
	// One read proves the endpoints answer (an external cluster may be down).
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Get(pctx, prefix+"cluster/id"); err != nil {
		s.Close()
		return nil, fmt.Errorf("meta: etcd %s does not answer: %v: %w", strings.Join(s.endpoints, ","), err, errdefs.ErrUnavailable)
	}
	return s, nil
}

func startEmbedded(cfg Config) (*embed.Etcd, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("meta: no directory for the embedded etcd: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	clientURL, err := parseURL(cfg.ClientURL, DefaultClientURL)
	if err != nil {
		return nil, err
	}
	peerURL, err := parseURL(cfg.PeerURL, DefaultPeerURL)
	if err != nil {
		return nil, err
	}
	ec := embed.NewConfig()
	if cfg.Name != "" {
		ec.Name = cfg.Name
	}
	ec.Dir = filepath.Join(cfg.Dir, "data")
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	ec.InitialClusterToken = "strata"
	// etcd logs a lot at info level; warnings go to a file next to its data
	// so that `strata up` keeps a readable terminal.
	ec.LogLevel = "warn"
	ec.LogOutputs = []string{filepath.Join(cfg.Dir, "etcd.log")}
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("meta: start embedded etcd in %s (client %s, peer %s): %v: %w",
			cfg.Dir, clientURL, peerURL, err, errdefs.ErrUnavailable)
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	select {
	case <-e.Server.ReadyNotify():
		if err := promote(e, timeout); err != nil {
			e.Close()
			return nil, fmt.Errorf("meta: embedded etcd in %s: %w", cfg.Dir, err)
		}
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("meta: embedded etcd failed: %v: %w", err, errdefs.ErrUnavailable)
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("meta: embedded etcd in %s not ready after %s (see %s): %w",
			cfg.Dir, timeout, filepath.Join(cfg.Dir, "etcd.log"), errdefs.ErrUnavailable)
	}
}

// promote makes the member a voting member when it joined as a learner
// (see AdmitNode), once it has caught up with the leader, which etcd
// checks. A learner serves no client requests, so Open waits for this.
func promote(e *embed.Etcd, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	promoted := false
	// Until this member has applied its own promotion, it is a learner.
	for e.Server.IsLearner() {
		if !promoted {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = e.Server.PromoteMember(ctx, uint64(e.Server.MemberID()))
			cancel()
			promoted = err == nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("learner %s not promoted after %s: %v: %w", e.Server.MemberID(), timeout, err, errdefs.ErrUnavailable)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func parseURL(s, def string) (*url.URL, error) {
	if s == "" {
		s = def
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("meta: etcd url %q must look like http://127.0.0.1:7421: %w", s, errdefs.ErrInvalidArgument)
	}
	return u, nil
}

// Close disconnects and, when embedded, stops the etcd member (its data
// stays in Dir for the next Open).
func (s *Store) Close() error {
	var err error
	if s.cli != nil {
		err = s.cli.Close()
	}
	s.stopEmbedded()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (s *Store) stopEmbedded() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Embedded says whether the store runs an embedded etcd member.
func (s *Store) Embedded() bool { return s.etcd != nil }

// External says whether the store is a client of an etcd cluster that
// Strata does not manage (Config.External).
func (s *Store) External() bool { return s.external }

// Endpoints returns the etcd client URLs the store uses.
func (s *Store) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Client returns the etcd client, for what needs etcd itself (leader
// election, watches).
func (s *Store) Client() *clientv3.Client { return s.cli }
