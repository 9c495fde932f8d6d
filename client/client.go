package client

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// Client is a connection to a Strata API server. Its service clients return
// translated errors (see the package comment). It is safe for concurrent use.
type Client struct {
	// Volumes manages volumes.
	Volumes stratav1.VolumeServiceClient
	// Snapshots manages snapshots.
	Snapshots stratav1.SnapshotServiceClient
	// Cluster reports on the cluster.
	Cluster stratav1.ClusterServiceClient
	// Users manages users and their tokens.
	Users stratav1.UserServiceClient
	// Secrets manages secrets (their values are never returned).
	Secrets stratav1.SecretServiceClient
	// Templates manages masked templates.
	Templates stratav1.TemplateServiceClient
	// Clones manages self-service clones of templates.
	Clones stratav1.CloneServiceClient

	api  string
	conn *grpc.ClientConn
}

// Dial connects to the API at api (host:port) and authenticates every call
// with token as "authorization: Bearer TOKEN". The connection is plaintext:
// the API listens on loopback. Dial does not wait for the server; a server
// that cannot be reached makes each call fail with an error that says so and
// wraps errdefs.ErrUnavailable. ctx is not kept: calls take their own.
func Dial(ctx context.Context, api, token string) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	addr := normalizeAddr(api)
	if addr == "" {
		return nil, fmt.Errorf("no API address: pass --api or set %s", EnvAPI)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(translateUnary(addr)),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("API address %q: %w", api, err)
	}
	return &Client{
		Volumes:   stratav1.NewVolumeServiceClient(conn),
		Snapshots: stratav1.NewSnapshotServiceClient(conn),
		Cluster:   stratav1.NewClusterServiceClient(conn),
		Users:     stratav1.NewUserServiceClient(conn),
		Secrets:   stratav1.NewSecretServiceClient(conn),
		Templates: stratav1.NewTemplateServiceClient(conn),
		Clones:    stratav1.NewCloneServiceClient(conn),
		api:       addr,
		conn:      conn,
	}, nil
}

// API returns the address the client talks to.
func (c *Client) API() string { return c.api }

// Conn returns the underlying gRPC connection, for services this package
// does not wrap.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

// DefaultPort is the API port `strata up` listens on unless told otherwise;
// Dial uses it when the address has no port.
const DefaultPort = "7420"

// normalizeAddr accepts host:port, host (DefaultPort), or a URL such as
// http://host:port/ that a user may paste from the REST docs, and returns
// host:port.
func normalizeAddr(api string) string {
	a := strings.TrimSpace(api)
	for _, scheme := range []string{"http://", "https://", "grpc://", "dns:///", "passthrough:///"} {
		if len(a) >= len(scheme) && strings.EqualFold(a[:len(scheme)], scheme) {
			a = a[len(scheme):]
			break
		}
	}
	a = strings.TrimRight(a, "/")
	if a == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(a); err != nil && strings.Contains(err.Error(), "missing port") {
		if !strings.Contains(strings.Trim(a, "[]"), ":") || strings.HasPrefix(a, "[") {
			a = net.JoinHostPort(strings.Trim(a, "[]"), DefaultPort)
		}
	}
	return a
}

// bearer sends the token with every call. It does not require transport
// security: the API is served in plaintext on loopback.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func translateUnary(addr string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		return translate(err, addr, cc.GetState() != connectivity.Ready)
	}
}
