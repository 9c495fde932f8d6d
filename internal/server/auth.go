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

// role returns the role of the token whose SHA-256 is sum.
func (c *tokenCache) role(ctx context.Context, sum []byte) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.loaded) > tokenTTL {
		if err := c.loadLocked(ctx); err != nil {
			return "", err
		}
	}
	if r, ok := c.findLocked(sum); ok {
		return r, nil
	}
	if time.Since(c.loaded) > tokenRetry {
		if err := c.loadLocked(ctx); err != nil {
			return "", err
		}
		if r, ok := c.findLocked(sum); ok {
			return r, nil
		}
	}
	return "", fmt.Errorf("invalid token: %w", errdefs.ErrUnauthenticated)
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
func (c *tokenCache) findLocked(sum []byte) (string, bool) {
	role, found := "", false
	for _, t := range c.tokens {
		h, err := hex.DecodeString(t.Hash)
		if err != nil {
			continue
		}
		if subtle.ConstantTimeCompare(h, sum) == 1 {
			role, found = t.Role, true
		}
	}
	return role, found
}

// authenticate checks the "authorization: Bearer TOKEN" metadata of a call
// (the REST gateway forwards the HTTP Authorization header as it).
func (s *Server) authenticate(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return fmt.Errorf("missing token: send \"authorization: Bearer TOKEN\" (the token is in the client config written by strata up): %w", errdefs.ErrUnauthenticated)
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return fmt.Errorf("authorization must be \"Bearer TOKEN\": %w", errdefs.ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(token))
	role, err := s.tokens.role(ctx, sum[:])
	if err != nil {
		return err
	}
	if role != meta.RoleAdmin {
		return fmt.Errorf("role %q may not make this call: %w", role, errdefs.ErrPermissionDenied)
	}
	return nil
}

// unary authenticates every call and maps the errors it returns to gRPC
// status codes.
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authenticate(ctx); err != nil {
		return nil, toStatus(err)
	}
	resp, err := handler(ctx, req)
	if err != nil {
		st := toStatus(err)
		if c := status.Code(st); c == codes.Internal || c == codes.Unknown || c == codes.Unavailable {
			s.log.Error("call failed", "method", info.FullMethod, "err", err)
		} else {
			s.log.Debug("call refused", "method", info.FullMethod, "err", err)
		}
		return nil, st
	}
	return resp, nil
}
