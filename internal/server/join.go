package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// GetJoinToken returns the token nodes give to join the cluster, making it
// when the cluster has none yet (admins only, see methodAccess).
func (s *Server) GetJoinToken(ctx context.Context, _ *pb.GetJoinTokenRequest) (*pb.JoinToken, error) {
	tok, err := s.meta.JoinToken(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: join token: %w", err)
	}
	return &pb.JoinToken{Token: tok}, nil
}

// JoinCluster admits a node that starts with --join. The join token in the
// request is its only credential (the auth interceptor lets this call, and
// only it, through without an API token). While the cluster has fewer than
// meta.MaxMembers etcd members, the node's member is added to etcd and the
// response carries the initial-cluster string it starts its member with;
// later nodes get only the endpoints.
func (s *Server) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.JoinClusterResponse, error) {
	want, err := s.meta.JoinToken(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: join token: %w", err)
	}
	if err := checkJoinToken(want, req.Token); err != nil {
		s.log.Warn("join refused: wrong join token", "node", req.Node, "from", callerAddr(ctx))
		return nil, err
	}
	if err := validateJoin(req); err != nil {
		return nil, err
	}
	// One join at a time through this node; etcd refuses a member added
	// while another has not started, whichever node added it.
	defer s.locks.lock("cluster/join")()
	_, online, err := s.meta.NodeStates(ctx)
	if err != nil {
		return nil, err
	}
	if online[req.Node] {
		return nil, fmt.Errorf("server: node name %q is taken by an online node of the cluster: start the new node with another --node-name: %w", req.Node, errdefs.ErrAlreadyExists)
	}
	adm, err := s.admit(ctx, req.Node, req.EtcdPeerUrl)
	if err != nil {
		return nil, fmt.Errorf("server: join node %q: %w", req.Node, err)
	}
	s.log.Info("node joins the cluster", "node", req.Node, "as", adm.Action.String(), "from", callerAddr(ctx), "peer", req.EtcdPeerUrl)
	return &pb.JoinClusterResponse{
		ClusterId:          s.clusterID,
		EtcdEndpoints:      adm.Endpoints,
		EtcdInitialCluster: adm.InitialCluster,
	}, nil
}

// admitWait is how long JoinCluster waits for etcd to take a member it
// refuses for now (a member that has just joined must have been connected
// for 5 seconds first) before it answers Unavailable, for the joining node
// to retry.
const admitWait = 8 * time.Second

// admit is meta.AdmitNode, tried again while etcd cannot take the member yet.
func (s *Server) admit(ctx context.Context, node, peerURL string) (meta.Admission, error) {
	deadline := time.Now().Add(admitWait)
	for {
		adm, err := s.meta.AdmitNode(ctx, node, peerURL)
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) {
			return adm, err
		}
		s.log.Debug("etcd cannot take the joining node's member yet; retrying", "node", node, "err", err)
		select {
		case <-ctx.Done():
			return adm, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// checkJoinToken compares the token given with the cluster's in constant
// time (of their SHA-256, so that not even the length leaks).
func checkJoinToken(want, given string) error {
	given = strings.TrimSpace(given)
	if given == "" {
		return fmt.Errorf("server: no join token given: pass --join-token (`strata cluster token` prints it on a node of the cluster): %w", errdefs.ErrUnauthenticated)
	}
	w, g := sha256.Sum256([]byte(want)), sha256.Sum256([]byte(given))
	if want == "" || subtle.ConstantTimeCompare(w[:], g[:]) != 1 {
		return fmt.Errorf("server: wrong join token: check --join-token (`strata cluster token` prints it on a node of the cluster): %w", errdefs.ErrUnauthenticated)
	}
	return nil
}

// validateJoin checks the joining node's name and etcd URLs.
func validateJoin(req *pb.JoinClusterRequest) error {
	if req.Node == "" || strings.ContainsAny(req.Node, "/ \t\n") || len(req.Node) > 253 {
		return fmt.Errorf("server: node name %q must be 1 to 253 characters without spaces or slashes: %w", req.Node, errdefs.ErrInvalidArgument)
	}
	if req.EtcdPeerUrl == "" {
		return nil
	}
	for _, u := range []string{req.EtcdPeerUrl, req.EtcdClientUrl} {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			return fmt.Errorf("server: etcd url %q of node %q must look like http://10.0.0.2:7422: %w", u, req.Node, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// callerAddr is the network address a call comes from, for logs: the
// REST gateway's forwarded address, else the gRPC peer's.
func callerAddr(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-forwarded-for"); len(v) > 0 {
		return v[0]
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}
