package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// casRetries bounds the retries of a read-modify-write that others keep
// changing under us.
const casRetries = 5

// newToken returns a new API token: 32 random bytes, hex, like the admin
// token strata up makes.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func userView(u meta.User) *pb.User {
	return &pb.User{
		Name:           u.Name,
		Role:           u.Role,
		Tenant:         u.Tenant,
		CreatedAt:      timestamppb.New(u.Created),
		TokenCreatedAt: timestamppb.New(u.TokenCreated),
	}
}

// validateUserName checks a user name: a DNS label other than AdminUser.
func validateUserName(name string) error {
	if err := errdefs.ValidateName("user", name); err != nil {
		return err
	}
	if name == AdminUser {
		return fmt.Errorf("user name %q is taken by the admin token that strata up makes (DATA_DIR/admin.token); choose another: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validateRole checks a new user's role and tenant: a developer needs a
// tenant, which confines it; admins and viewers reach every tenant and
// take none.
func validateRole(role, tenant string) error {
	switch role {
	case meta.RoleDeveloper:
		if tenant == "" {
			return fmt.Errorf("a developer needs a tenant (--tenant): it manages only its tenant's clones: %w", errdefs.ErrInvalidArgument)
		}
		return errdefs.ValidateName("tenant", tenant)
	case meta.RoleAdmin, meta.RoleViewer:
		if tenant != "" {
			return fmt.Errorf("only developers have a tenant: %s users reach every tenant, so %q cannot be given: %w", role, tenant, errdefs.ErrInvalidArgument)
		}
		return nil
	case "":
		return fmt.Errorf("role must be given: admin, developer or viewer: %w", errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("role %q is not admin, developer or viewer: %w", role, errdefs.ErrInvalidArgument)
}

// CreateUser makes a user with a new token and returns the token, which is
// not stored (only its hash is) and so never shown again. An existing user
// is AlreadyExists, whatever its role: rotate its token, or delete it first.
func (s *Server) CreateUser(ctx context.Context, req *pb.CreateUserRequest) (*pb.CreateUserResponse, error) {
	if err := validateUserName(req.Name); err != nil {
		return nil, err
	}
	if err := validateRole(req.Role, req.Tenant); err != nil {
		return nil, err
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	u, err := s.meta.CreateUser(ctx, meta.User{Name: req.Name, Role: req.Role, Tenant: req.Tenant, TokenHash: meta.HashToken(token)})
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return nil, fmt.Errorf("user %q already exists (strata user rotate gives it a new token): %w", req.Name, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return nil, err
	}
	// A token made a moment after the cache was loaded works at once.
	s.tokens.invalidate()
	return &pb.CreateUserResponse{User: userView(u), Token: token}, nil
}

// ListUsers lists the users, sorted by name. The admin token that strata up
// makes is no user and is not listed.
func (s *Server) ListUsers(ctx context.Context, req *pb.ListUsersRequest) (*pb.ListUsersResponse, error) {
	users, err := s.meta.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListUsersResponse{Users: make([]*pb.User, 0, len(users))}
	for _, u := range users {
		resp.Users = append(resp.Users, userView(u))
	}
	return resp, nil
}

// getUser returns user name, NotFound with a hint for the admin token.
func (s *Server) getUser(ctx context.Context, name string) (meta.User, error) {
	if name == AdminUser {
		return meta.User{}, fmt.Errorf("%q is the admin token that strata up makes, not a user: to replace it, stop the node, remove DATA_DIR/admin.token and start it again: %w", name, errdefs.ErrNotFound)
	}
	if err := errdefs.ValidateName("user", name); err != nil {
		return meta.User{}, err
	}
	return s.meta.GetUser(ctx, name)
}

// DeleteUser removes a user and its token. The token stops working at once
// on this node (the token cache is dropped) and within tokenTTL on others.
func (s *Server) DeleteUser(ctx context.Context, req *pb.DeleteUserRequest) (*pb.DeleteUserResponse, error) {
	for range casRetries {
		u, err := s.getUser(ctx, req.Name)
		if err != nil {
			return nil, err
		}
		err = s.meta.DeleteUser(ctx, u)
		if errors.Is(err, meta.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.tokens.invalidate()
		return &pb.DeleteUserResponse{}, nil
	}
	return nil, fmt.Errorf("user %q: %w", req.Name, meta.ErrConflict)
}

// RotateUserToken gives a user a new token and revokes its old one, which
// stops working as after DeleteUser.
func (s *Server) RotateUserToken(ctx context.Context, req *pb.RotateUserTokenRequest) (*pb.RotateUserTokenResponse, error) {
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	for range casRetries {
		u, err := s.getUser(ctx, req.Name)
		if err != nil {
			return nil, err
		}
		u, err = s.meta.ReplaceUserToken(ctx, u, meta.HashToken(token))
		if errors.Is(err, meta.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.tokens.invalidate()
		return &pb.RotateUserTokenResponse{User: userView(u), Token: token}, nil
	}
	return nil, fmt.Errorf("user %q: %w", req.Name, meta.ErrConflict)
}

// WhoAmI describes the caller; the admin token of strata up is user
// "admin", with no dates.
func (s *Server) WhoAmI(ctx context.Context, req *pb.WhoAmIRequest) (*pb.User, error) {
	c := CallerFrom(ctx)
	if c.User != AdminUser {
		u, err := s.meta.GetUser(ctx, c.User)
		if err == nil {
			return userView(u), nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	}
	return &pb.User{Name: c.User, Role: c.Role, Tenant: c.Tenant}, nil
}
