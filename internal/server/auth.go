package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// Token hashes are read from etcd at most every tokenTTL, and again on an
// unknown token but not more often than tokenRetry, so that a flood of bad
// tokens cannot become a flood of etcd reads.
const (
	tokenTTL   = 10 * time.Second
	tokenRetry = time.Second
)

type tokenCache struct {
	store *meta.Store

	mu     sync.Mutex
	tokens []meta.Token
	loaded time.Time
}

// lookup returns the token whose SHA-256 is sum.
func (c *tokenCache) lookup(ctx context.Context, sum []byte) (meta.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.loaded) > tokenTTL {
		if err := c.loadLocked(ctx); err != nil {
			return meta.Token{}, err
		}
	}
	if t, ok := c.findLocked(sum); ok {
		return t, nil
	}
	if time.Since(c.loaded) > tokenRetry {
		if err := c.loadLocked(ctx); err != nil {
			return meta.Token{}, err
		}
		if t, ok := c.findLocked(sum); ok {
			return t, nil
		}
	}
	return meta.Token{}, fmt.Errorf("invalid token: %w", errdefs.ErrUnauthenticated)
}

// invalidate makes the next lookup read the tokens again: a token deleted
// or replaced through this node stops working at once (on other nodes,
// within tokenTTL).
func (c *tokenCache) invalidate() {
	c.mu.Lock()
	c.loaded = time.Time{}
	c.mu.Unlock()
}

func (c *tokenCache) loadLocked(ctx context.Context) error {
	toks, err := c.store.ListTokens(ctx)
	if err != nil {
		return err
	}
	c.tokens, c.loaded = toks, time.Now()
	return nil
}

// findLocked compares sum with every stored hash in constant time.
func (c *tokenCache) findLocked(sum []byte) (meta.Token, bool) {
	var tok meta.Token
	found := false
	for _, t := range c.tokens {
		h, err := hex.DecodeString(t.Hash)
		if err != nil {
			continue
		}
		if subtle.ConstantTimeCompare(h, sum) == 1 {
			tok, found = t, true
		}
	}
	return tok, found
}

// authenticate checks the "authorization: Bearer TOKEN" metadata of a call
// (the REST gateway forwards the HTTP Authorization header as it) and
// returns who makes it.
func (s *Server) authenticate(ctx context.Context) (Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return Caller{}, fmt.Errorf("missing token: send \"authorization: Bearer TOKEN\" (the token is in the client config written by strata up): %w", errdefs.ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return Caller{}, fmt.Errorf("authorization must be \"Bearer TOKEN\": %w", errdefs.ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(token))
	tok, err := s.tokens.lookup(ctx, sum[:])
	if err != nil {
		return Caller{}, err
	}
	c := Caller{User: tok.User, Role: tok.Role, Tenant: tok.Tenant}
	if c.User == "" {
		// The admin token strata up makes belongs to no user record.
		c.User = AdminUser
	}
	return c, nil
}

// unary authenticates every call, checks the method against the access
// rules, gives the handler the caller (CallerFrom), and maps the errors it
// returns to gRPC status codes. JoinCluster alone goes through without an
// API token: a joining node has none, and the handler checks the join
// token in the request; it runs with no caller, whom no check allows
// anything.
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var caller Caller
	if info.FullMethod != pb.ClusterService_JoinCluster_FullMethodName {
		var err error
		if caller, err = s.authenticate(ctx); err != nil {
			return nil, toStatus(err)
		}
		if err := authorizeMethod(caller, info.FullMethod); err != nil {
			s.log.Info("call denied", "method", info.FullMethod, "user", caller.User, "role", caller.Role, "err", err)
			return nil, toStatus(err)
		}
		ctx = withCaller(ctx, caller)
	}
	resp, err := handler(ctx, req)
	if err != nil {
		st := toStatus(err)
		if c := status.Code(st); c == codes.Internal || c == codes.Unknown || c == codes.Unavailable {
			s.log.Error("call failed", "method", info.FullMethod, "user", caller.User, "err", err)
		} else {
			s.log.Debug("call refused", "method", info.FullMethod, "user", caller.User, "err", err)
		}
		return nil, st
	}
	return resp, nil
}
