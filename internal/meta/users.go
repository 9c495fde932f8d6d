package meta

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// User is a named holder of one API token, with a role and, for
// developers, a tenant. The user record and its token record (keyed by the
// token's hash, which is what authentication looks up) are written and
// removed together, in one transaction.
type User struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	// TokenHash is the hex SHA-256 of the user's token (see HashToken).
	TokenHash string    `json:"tokenHash"`
	Created   time.Time `json:"created"`
	// TokenCreated is when the current token was made (creation or the
	// last rotation).
	TokenCreated time.Time `json:"tokenCreated"`
	Rev          int64     `json:"-"`
}

func userKey(name string) string { return prefix + "users/" + name }

func (u User) token() Token {
	return Token{Hash: u.TokenHash, Role: u.Role, User: u.Name, Tenant: u.Tenant, Created: u.TokenCreated}
}

func checkHash(hash string) error {
	if len(hash) != sha256.Size*2 {
		return fmt.Errorf("meta: token hash must be a hex sha-256: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// CreateUser writes a new user and its token record (u.TokenHash) in one
// transaction; errdefs.ErrAlreadyExists when the user exists. Created and
// TokenCreated are set to now.
func (s *Store) CreateUser(ctx context.Context, u User) (User, error) {
	if err := checkHash(u.TokenHash); err != nil {
		return User{}, err
	}
	now := time.Now().UTC()
	u.Created, u.TokenCreated = now, now
	ukey, tkey := userKey(u.Name), tokenKey(u.TokenHash)
	puts, err := u.puts()
	if err != nil {
		return User{}, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ukey), "=", 0), clientv3.Compare(clientv3.CreateRevision(tkey), "=", 0)).
		Then(puts...).
		Commit()
	if err != nil {
		return User{}, etcdErr(err)
	}
	if !resp.Succeeded {
		return User{}, fmt.Errorf("user %q: %w", u.Name, errdefs.ErrAlreadyExists)
	}
	u.Rev = resp.Header.Revision
	return u, nil
}

// GetUser returns the record of user name; errdefs.ErrNotFound when missing.
func (s *Store) GetUser(ctx context.Context, name string) (User, error) {
	var u User
	rev, err := s.get(ctx, userKey(name), &u)
	if err != nil {
		return User{}, fmt.Errorf("user %q: %w", name, err)
	}
	u.Rev = rev
	return u, nil
}

// ListUsers returns every user, sorted by name.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	return list(ctx, s, prefix+"users/", func(u *User, rev int64) { u.Rev = rev })
}

// DeleteUser removes the user and its token, if the user record is still
// at revision u.Rev (ErrConflict otherwise).
func (s *Store) DeleteUser(ctx context.Context, u User) error {
	ukey := userKey(u.Name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(ukey), "=", u.Rev)).
		Then(clientv3.OpDelete(ukey), clientv3.OpDelete(tokenKey(u.TokenHash))).
		Commit()
	if err != nil {
		return etcdErr(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("user %q: %w", u.Name, ErrConflict)
	}
	return nil
}

// ReplaceUserToken gives user u the token whose hash is newHash and
// removes its old token, in one transaction, if the user record is still
// at revision u.Rev (ErrConflict otherwise). It returns the new record.
func (s *Store) ReplaceUserToken(ctx context.Context, u User, newHash string) (User, error) {
	if err := checkHash(newHash); err != nil {
		return User{}, err
	}
	old := u.TokenHash
	u.TokenHash, u.TokenCreated = newHash, time.Now().UTC()
	puts, err := u.puts()
	if err != nil {
		return User{}, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(userKey(u.Name)), "=", u.Rev), clientv3.Compare(clientv3.CreateRevision(tokenKey(newHash)), "=", 0)).
		Then(append([]clientv3.Op{clientv3.OpDelete(tokenKey(old))}, puts...)...).
		Commit()
	if err != nil {
		return User{}, etcdErr(err)
	}
	if !resp.Succeeded {
		return User{}, fmt.Errorf("user %q: %w", u.Name, ErrConflict)
	}
	u.Rev = resp.Header.Revision
	return u, nil
}

// puts writes the user record and its token record.
func (u User) puts() ([]clientv3.Op, error) {
	uval, err := json.Marshal(u)
	if err != nil {
		return nil, err
	}
	tval, err := json.Marshal(u.token())
	if err != nil {
		return nil, err
	}
	return []clientv3.Op{clientv3.OpPut(userKey(u.Name), string(uval)), clientv3.OpPut(tokenKey(u.TokenHash), string(tval))}, nil
}
