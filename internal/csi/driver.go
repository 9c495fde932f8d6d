// Package csi is Strata's CSI driver (Container Storage Interface, spec
// 1.12): the Identity, Controller and Node services, served by the node
// daemon (strata up --csi-endpoint) as a thin adapter over the Strata API,
// like the Docker plugin.
//
// IDs: a volume ID is the Strata volume's name; a snapshot ID is
// "VOLUME@SNAPSHOT". CSI names that are not Strata names map to one
// deterministically (strataName), and the CSI name is recorded in the
// volume's label LabelName, so that CreateVolume is idempotent.
//
// The controller makes volumes on the node it runs on (a volume lives on
// one node until replication ships): CreateVolume refuses topologies and
// zones this node is not in. The node service mounts a volume's filesystem
// at the staging path (FUSE file, loop device, mkfs on first use) and bind
// mounts it at each target; a raw block volume is mapped (MapVolume), bind
// mounted as a file in the staging directory, and bind mounted from there
// at each target.
package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/unixsock"
)

// VolumeAPI is the part of Strata's volume service the driver uses;
// stratav1.VolumeServiceClient (client.Client.Volumes) implements it.
type VolumeAPI interface {
	CreateVolume(ctx context.Context, in *stratav1.CreateVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error)
	GetVolume(ctx context.Context, in *stratav1.GetVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error)
	ListVolumes(ctx context.Context, in *stratav1.ListVolumesRequest, opts ...grpc.CallOption) (*stratav1.ListVolumesResponse, error)
	DeleteVolume(ctx context.Context, in *stratav1.DeleteVolumeRequest, opts ...grpc.CallOption) (*stratav1.DeleteVolumeResponse, error)
	ResizeVolume(ctx context.Context, in *stratav1.ResizeVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error)
	MountVolume(ctx context.Context, in *stratav1.MountVolumeRequest, opts ...grpc.CallOption) (*stratav1.MountVolumeResponse, error)
	UnmountVolume(ctx context.Context, in *stratav1.UnmountVolumeRequest, opts ...grpc.CallOption) (*stratav1.UnmountVolumeResponse, error)
	MapVolume(ctx context.Context, in *stratav1.MapVolumeRequest, opts ...grpc.CallOption) (*stratav1.MapVolumeResponse, error)
	UnmapVolume(ctx context.Context, in *stratav1.UnmapVolumeRequest, opts ...grpc.CallOption) (*stratav1.UnmapVolumeResponse, error)
}

// SnapshotAPI is the part of Strata's snapshot service the driver uses.
type SnapshotAPI interface {
	CreateSnapshot(ctx context.Context, in *stratav1.CreateSnapshotRequest, opts ...grpc.CallOption) (*stratav1.Snapshot, error)
	ListSnapshots(ctx context.Context, in *stratav1.ListSnapshotsRequest, opts ...grpc.CallOption) (*stratav1.ListSnapshotsResponse, error)
	DeleteSnapshot(ctx context.Context, in *stratav1.DeleteSnapshotRequest, opts ...grpc.CallOption) (*stratav1.DeleteSnapshotResponse, error)
}

// ClusterAPI is the part of Strata's cluster service the driver uses.
type ClusterAPI interface {
	GetStatus(ctx context.Context, in *stratav1.GetStatusRequest, opts ...grpc.CallOption) (*stratav1.Status, error)
}

// Backend is the Strata API the driver adapts. With a *client.Client c:
// Backend{Volumes: c.Volumes, Snapshots: c.Snapshots, Cluster: c.Cluster}.
// Errors are expected to carry the API's gRPC status (the client's do).
type Backend struct {
	Volumes   VolumeAPI
	Snapshots SnapshotAPI
	Cluster   ClusterAPI
}

// Options configures the driver.
type Options struct {
	// NodeName is this node's Strata name: the CSI node ID, and where the
	// controller makes volumes. Required.
	NodeName string
	// Version is reported by GetPluginInfo.
	Version string
	// Logger receives a debug line per call and a warning per failed
	// call; slog.Default() when nil.
	Logger *slog.Logger
}

// Driver serves the CSI services. Its methods are safe for concurrent use;
// calls about one volume or snapshot name are serialized.
type Driver struct {
	api  Backend
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New checks the backend and options.
func New(api Backend, opts Options) (*Driver, error) {
	if api.Volumes == nil || api.Snapshots == nil || api.Cluster == nil {
		return nil, errors.New("csi: Backend needs Volumes, Snapshots and Cluster")
	}
	if opts.NodeName == "" {
		return nil, fmt.Errorf("csi: no node name: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Driver{api: api, opts: opts, log: opts.Logger.With("component", "csi"), locks: map[string]*sync.Mutex{}}, nil
}

// lock serializes the calls about one name (a volume, or a snapshot name
// prefixed "snapshot:"). Entries are kept: a node has few names.
func (d *Driver) lock(name string) func() {
	d.mu.Lock()
	l, ok := d.locks[name]
	if !ok {
		l = &sync.Mutex{}
		d.locks[name] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Register registers the Identity, Controller and Node services on s.
func (d *Driver) Register(s *grpc.Server) {
	csi.RegisterIdentityServer(s, identity{d: d})
	csi.RegisterControllerServer(s, controller{d: d})
	csi.RegisterNodeServer(s, node{d: d})
}

// NewServer returns a gRPC server with the driver's services and its
// logging and error mapping.
func (d *Driver) NewServer() *grpc.Server {
	s := grpc.NewServer(grpc.UnaryInterceptor(d.intercept))
	d.Register(s)
	return s
}

// intercept logs every call at debug level and every failure as a
// warning, and gives errors that carry no gRPC status the code of the
// errdefs sentinel they wrap.
func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(errdefs.GRPCCode(err), strings.Join(strings.Fields(err.Error()), " "))
		}
		st := status.Convert(err)
		d.log.Warn("csi call failed", append(callAttrs(req), "method", method, "code", st.Code().String(), "err", st.Message(), "duration", time.Since(start))...)
		return nil, err
	}
	d.log.Debug("csi call", append(callAttrs(req), "method", method, "duration", time.Since(start))...)
	return resp, nil
}

// callAttrs picks the names and paths out of a request for the log (never
// the whole request: it may hold secrets).
func callAttrs(req any) []any {
	var out []any
	add := func(key, v string) {
		if v != "" {
			out = append(out, key, v)
		}
	}
	if r, ok := req.(interface{ GetName() string }); ok {
		add("name", r.GetName())
	}
	if r, ok := req.(interface{ GetVolumeId() string }); ok {
		add("volume", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetSnapshotId() string }); ok {
		add("snapshot", r.GetSnapshotId())
	}
	if r, ok := req.(interface{ GetSourceVolumeId() string }); ok {
		add("source", r.GetSourceVolumeId())
	}
	if r, ok := req.(interface{ GetStagingTargetPath() string }); ok {
		add("staging", r.GetStagingTargetPath())
	}
	if r, ok := req.(interface{ GetTargetPath() string }); ok {
		add("target", r.GetTargetPath())
	}
	if r, ok := req.(interface{ GetVolumePath() string }); ok {
		add("path", r.GetVolumePath())
	}
	return out
}

// ParseEndpoint returns the socket path of a CSI endpoint,
// unix:///path/to/csi.sock (or unix:/path/to/csi.sock).
func ParseEndpoint(endpoint string) (string, error) {
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		path, ok = strings.CutPrefix(endpoint, "unix:")
	}
	if !ok || !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("CSI endpoint %q: want unix:///absolute/path/csi.sock: %w", endpoint, errdefs.ErrInvalidArgument)
	}
	return path, nil
}

// Serve serves the driver on the unix socket of endpoint until ctx is done,
// then stops (calls under way are cancelled after a grace period) and
// removes the socket. A stale socket left by a crash is replaced.
func (d *Driver) Serve(ctx context.Context, endpoint string) error {
	path, err := ParseEndpoint(endpoint)
	if err != nil {
		return err
	}
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		return fmt.Errorf("csi endpoint: %w", err)
	}
	defer os.Remove(path)
	return d.serve(ctx, ln)
}

func (d *Driver) serve(ctx context.Context, ln net.Listener) error {
	s := d.NewServer()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	d.log.Info("csi driver serving", "endpoint", ln.Addr().String(), "driver", DriverName, "node", d.opts.NodeName)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		s.Stop()
		<-stopped
	}
	<-done
	return nil
}

// identity is the Identity service.
type identity struct {
	csi.UnimplementedIdentityServer
	d *Driver
}

func (i identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: DriverName, VendorVersion: i.d.opts.Version}, nil
}

func (i identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	service := func(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
		return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: t}}}
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		service(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		service(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

// Probe reports ready when the node's API answers.
func (i identity) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	_, err := i.d.api.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
	if err != nil {
		i.d.log.Warn("probe: the Strata API does not answer", "err", err)
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(err == nil)}, nil
}

// require returns InvalidArgument naming the first of the fields (name,
// value pairs) that is empty.
func require(fields ...string) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] == "" {
			return status.Errorf(codes.InvalidArgument, "%s is required", fields[i])
		}
	}
	return nil
}
