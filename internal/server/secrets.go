package server

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/size"
)

// MaxSecretSize bounds a secret's value: 64 KiB.
const MaxSecretSize = 64 << 10

func secretView(sec meta.Secret) *pb.Secret {
	return &pb.Secret{Name: sec.Name, CreatedAt: timestamppb.New(sec.Created), UpdatedAt: timestamppb.New(sec.Updated)}
}

// SetSecret makes a secret or replaces its value. The response, like every
// other, carries no value; server-side code reads it with
// (*meta.Store).GetSecret.
func (s *Server) SetSecret(ctx context.Context, req *pb.SetSecretRequest) (*pb.Secret, error) {
	if err := errdefs.ValidateName("secret", req.Name); err != nil {
		return nil, err
	}
	if len(req.Value) == 0 {
		return nil, fmt.Errorf("secret %q: the value is empty: %w", req.Name, errdefs.ErrInvalidArgument)
	}
	if len(req.Value) > MaxSecretSize {
		return nil, fmt.Errorf("secret %q: the value has %s, more than the %s a secret may hold: %w",
			req.Name, size.Format(int64(len(req.Value))), size.Format(MaxSecretSize), errdefs.ErrInvalidArgument)
	}
	sec, err := s.meta.PutSecret(ctx, req.Name, req.Value)
	if err != nil {
		return nil, err
	}
	return secretView(sec), nil
}

// ListSecrets lists the secrets' names and dates, sorted by name.
func (s *Server) ListSecrets(ctx context.Context, req *pb.ListSecretsRequest) (*pb.ListSecretsResponse, error) {
	secs, err := s.meta.ListSecrets(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListSecretsResponse{Secrets: make([]*pb.Secret, 0, len(secs))}
	for _, sec := range secs {
		resp.Secrets = append(resp.Secrets, secretView(sec))
	}
	return resp, nil
}

// DeleteSecret removes a secret; a missing one is NotFound.
func (s *Server) DeleteSecret(ctx context.Context, req *pb.DeleteSecretRequest) (*pb.DeleteSecretResponse, error) {
	if err := errdefs.ValidateName("secret", req.Name); err != nil {
		return nil, err
	}
	if err := s.meta.DeleteSecret(ctx, req.Name); err != nil {
		return nil, err
	}
	return &pb.DeleteSecretResponse{}, nil
}
