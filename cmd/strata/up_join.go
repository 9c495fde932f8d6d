package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// Default ports of a node's services; --ip puts them all on one address.
const (
	defaultAPIPort        = "7420"
	defaultNBDPort        = "10809"
	defaultEtcdClientPort = "7421"
	defaultEtcdPeerPort   = "7422"
	defaultReplicaPort    = "7425"
)

// envJoinToken is read when --join-token is not given, so that the token
// need not show in the process list.
const envJoinToken = "STRATA_JOIN_TOKEN"

// joinTimeout bounds how long a joining node retries while the cluster
// cannot admit it yet (a member that has just started must be connected
// for a few seconds before etcd accepts another).
const joinTimeout = 90 * time.Second

// applyIP gives every address option that changed (a flag name) does not
// report as set its default port on o.ip.
func applyIP(changed interface{ Changed(string) bool }, o *upOptions) error {
	if o.ip == "" {
		return nil
	}
	ip := net.ParseIP(o.ip)
	if ip == nil || ip.IsUnspecified() {
		return fmt.Errorf("--ip %q: want this node's IP address, e.g. 10.0.0.5 (the other nodes reach it there, so not 0.0.0.0): %w", o.ip, errdefs.ErrInvalidArgument)
	}
	host := ip.String()
	for _, a := range []struct {
		flag string
		p    *string
		v    string
	}{
		{"api-addr", &o.apiAddr, net.JoinHostPort(host, defaultAPIPort)},
		{"nbd-addr", &o.nbdAddr, net.JoinHostPort(host, defaultNBDPort)},
		{"replica-addr", &o.replicaAddr, net.JoinHostPort(host, defaultReplicaPort)},
		{"etcd-client-url", &o.etcdClientURL, "http://" + net.JoinHostPort(host, defaultEtcdClientPort)},
		{"etcd-peer-url", &o.etcdPeerURL, "http://" + net.JoinHostPort(host, defaultEtcdPeerPort)},
	} {
		if changed == nil || !changed.Changed(a.flag) {
			*a.p = a.v
		}
	}
	return nil
}

// mergeLabels adds the --label KEY=VALUE flags to the --labels map.
func mergeLabels(labels map[string]string, list []string) (map[string]string, error) {
	out := make(map[string]string, len(labels)+len(list))
	add := func(k, v string) error {
		if k == "" || strings.ContainsAny(k, " \t\n=,") {
			return fmt.Errorf("label key %q: want a non-empty key without spaces, '=' or ',', e.g. zone=a: %w", k, errdefs.ErrInvalidArgument)
		}
		if old, ok := out[k]; ok && old != v {
			return fmt.Errorf("label %s is given twice, as %q and %q: %w", k, old, v, errdefs.ErrInvalidArgument)
		}
		out[k] = v
		return nil
	}
	for k, v := range labels {
		if err := add(strings.TrimSpace(k), strings.TrimSpace(v)); err != nil {
			return nil, err
		}
	}
	for _, l := range list {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE, e.g. --label zone=a: %w", l, errdefs.ErrInvalidArgument)
		}
		if err := add(strings.TrimSpace(k), strings.TrimSpace(v)); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// storeConfig says how this node reaches etcd: through the member or the
// endpoints its data directory says it joined with (DATA_DIR/cluster.json),
// through the external etcd of --etcd-endpoints, by joining the cluster of
// --join (first start only), or through the member it founds or runs.
func storeConfig(ctx context.Context, o upOptions, log *slog.Logger) (meta.Config, *meta.Membership, error) {
	embedded := meta.Config{
		Dir:       filepath.Join(o.dataDir, "etcd"),
		Name:      o.nodeName,
		ClientURL: o.etcdClientURL,
		PeerURL:   o.etcdPeerURL,
	}
	m, err := meta.LoadMembership(o.dataDir)
	if err != nil {
		return meta.Config{}, nil, err
	}
	switch {
	case m != nil:
		if len(o.etcdEndpoints) > 0 {
			return meta.Config{}, nil, fmt.Errorf("%s says this node joined cluster %s; --etcd-endpoints cannot change that: %w",
				filepath.Join(o.dataDir, meta.MembershipFile), m.ClusterID, errdefs.ErrInvalidArgument)
		}
		if m.Node != o.nodeName {
			return meta.Config{}, nil, fmt.Errorf("this node joined its cluster as %q (%s): start it with --node-name %s: %w",
				m.Node, filepath.Join(o.dataDir, meta.MembershipFile), m.Node, errdefs.ErrInvalidArgument)
		}
		if o.join != "" {
			log.Info("this node joined its cluster already; --join is ignored", "cluster", m.ClusterID, "joined", m.Joined, "via", m.JoinedVia)
		}
		return membershipConfig(embedded, m, o)
	case o.join == "" && len(o.etcdEndpoints) > 0:
		return meta.Config{Endpoints: o.etcdEndpoints, External: true}, nil, nil
	case o.join == "":
		return embedded, nil, nil
	}
	if len(o.etcdEndpoints) > 0 {
		return meta.Config{}, nil, fmt.Errorf("--join and --etcd-endpoints exclude each other: with an external etcd, start every node with the same --etcd-endpoints and no --join: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(filepath.Join(embedded.Dir, "data", "member")); err == nil {
		return meta.Config{}, nil, fmt.Errorf("%s holds the etcd data of the cluster this node founded when it started without --join; a node joins with an empty --data-dir: %w",
			embedded.Dir, errdefs.ErrFailedPrecondition)
	}
	if m, err = join(ctx, o, log); err != nil {
		return meta.Config{}, nil, err
	}
	// Remembered before the member starts: should the node stop now, it
	// starts the member that etcd already lists when it restarts.
	if err := meta.SaveMembership(o.dataDir, *m); err != nil {
		return meta.Config{}, nil, err
	}
	return membershipConfig(embedded, m, o)
}

func membershipConfig(embedded meta.Config, m *meta.Membership, o upOptions) (meta.Config, *meta.Membership, error) {
	if !m.EtcdMember {
		return meta.Config{Endpoints: m.Endpoints}, m, nil
	}
	if m.PeerURL != o.etcdPeerURL {
		return meta.Config{}, nil, fmt.Errorf("this node's etcd member joined with peer URL %s, not %s: start it with the same --ip or --etcd-peer-url: %w",
			m.PeerURL, o.etcdPeerURL, errdefs.ErrInvalidArgument)
	}
	embedded.InitialCluster = m.InitialCluster
	return embedded, m, nil
}

// join asks the node at o.join to admit this one, retrying while the
// cluster cannot admit it yet, and returns what the node must remember.
func join(ctx context.Context, o upOptions, log *slog.Logger) (*meta.Membership, error) {
	token := strings.TrimSpace(o.joinToken)
	if token == "" {
		return nil, fmt.Errorf("join: --join needs --join-token (or $%s): `strata cluster token` prints it on a node of the cluster: %w", envJoinToken, errdefs.ErrInvalidArgument)
	}
	if err := checkJoinAddresses(o.join, o.etcdPeerURL); err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, o.join, "")
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer c.Close()
	req := &stratav1.JoinClusterRequest{Token: token, Node: o.nodeName, EtcdPeerUrl: o.etcdPeerURL, EtcdClientUrl: o.etcdClientURL}
	deadline := time.Now().Add(joinTimeout)
	var resp *stratav1.JoinClusterResponse
	for {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err = c.Cluster.JoinCluster(actx, req)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, errdefs.ErrUnauthenticated) {
			return nil, fmt.Errorf("join: the cluster at %s refused the join token: check --join-token (`strata cluster token` prints it on a node of the cluster): %w", o.join, errdefs.ErrUnauthenticated)
		}
		if !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		log.Info("the cluster cannot admit this node yet; retrying", "join", o.join, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	m := &meta.Membership{
		ClusterID: resp.ClusterId,
		Node:      o.nodeName,
		Endpoints: resp.EtcdEndpoints,
		JoinedVia: o.join,
		Joined:    time.Now().UTC(),
	}
	if resp.EtcdInitialCluster != "" {
		m.EtcdMember, m.PeerURL, m.ClientURL, m.InitialCluster = true, o.etcdPeerURL, o.etcdClientURL, resp.EtcdInitialCluster
	} else if len(resp.EtcdEndpoints) == 0 {
		return nil, fmt.Errorf("join: %s answered with no etcd endpoints: %w", o.join, errdefs.ErrUnavailable)
	}
	log.Info("joined the cluster", "cluster", m.ClusterID, "via", o.join, "etcd member", m.EtcdMember, "endpoints", m.Endpoints)
	return m, nil
}

// checkJoinAddresses refuses an etcd peer URL on loopback when the
// cluster is reached at an address that is not: the cluster's members
// would then look for this node's member on their own machine.
func checkJoinAddresses(joinAddr, peerURL string) error {
	host, _, err := net.SplitHostPort(joinAddr)
	if err != nil {
		host = joinAddr
	}
	jip := net.ParseIP(strings.Trim(host, "[]"))
	u, err := url.Parse(peerURL)
	if jip == nil || err != nil {
		return nil
	}
	pip := net.ParseIP(u.Hostname())
	if !jip.IsLoopback() && (u.Hostname() == "localhost" || (pip != nil && pip.IsLoopback())) {
		return fmt.Errorf("join: the cluster is at %s but this node's etcd peer URL %s is on loopback, where the other nodes cannot reach it: start it with --ip and this machine's address: %w",
			joinAddr, peerURL, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkCluster checks, for a node that joined, that the etcd it reaches
// is its cluster's, and makes the cluster's join token on the first
// node's first start.
func checkCluster(ctx context.Context, o upOptions, store *meta.Store, m *meta.Membership) error {
	if m != nil {
		id, err := store.ClusterID(ctx)
		if err != nil {
			return err
		}
		if id != m.ClusterID {
			return fmt.Errorf("etcd %s holds cluster %s, but this node joined cluster %s (%s): %w",
				strings.Join(store.Endpoints(), ","), id, m.ClusterID, filepath.Join(o.dataDir, meta.MembershipFile), errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if _, err := store.JoinToken(ctx); err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	return nil
}

// etcdRole describes how the node uses etcd, for the start-up messages.
func etcdRole(store *meta.Store) string {
	eps := strings.Join(store.Endpoints(), ",")
	switch {
	case store.Embedded():
		return "embedded member, client URL " + eps
	case store.External():
		return "external etcd " + eps
	}
	return "client of the cluster's members " + eps
}
