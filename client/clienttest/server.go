// Package clienttest provides an in-memory fake of the Strata API for unit
// tests of API clients (the CLI, CSI, the Docker plugin): a real gRPC server
// on 127.0.0.1 whose services keep volumes and snapshots in maps, check the
// bearer token, record every request, and can be told to fail.
//
// The fake follows the API's documented behaviour closely enough for client
// logic (not found, already exists, shrink and busy refusals, clone counts),
// not the real server's every rule; end-to-end tests use the real daemon.
package clienttest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
)

// Token is the bearer token the fake accepts.
const Token = "test-token"

// NBDAddress is the address the fake's export URIs name.
const NBDAddress = "127.0.0.1:10809"

// Server is a running fake API server.
type Server struct {
	// Addr is the host:port the server listens on.
	Addr string

	grpc *grpc.Server

	mu       sync.Mutex
	vols     map[string]*stratav1.Volume
	snaps    map[string][]*stratav1.Snapshot // by volume, oldest first
	requests []Request
	fail     func(method string) error
	settings map[string]string // cluster settings that were set
	maps     int               // MapVolume calls that mapped a volume
}

// Request is one call the server received.
type Request struct {
	// Method is the full gRPC method name, e.g. /strata.v1.VolumeService/CreateVolume.
	Method string
	// Message is the request message.
	Message proto.Message
}

// New starts a fake server on 127.0.0.1:0 and stops it when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Addr:  ln.Addr().String(),
		vols:  map[string]*stratav1.Volume{},
		snaps: map[string][]*stratav1.Snapshot{},
	}
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	stratav1.RegisterVolumeServiceServer(s.grpc, volumes{s: s})
	stratav1.RegisterSnapshotServiceServer(s.grpc, snapshots{s: s})
	stratav1.RegisterClusterServiceServer(s.grpc, cluster{s: s})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.grpc.Serve(ln)
	}()
	t.Cleanup(func() {
		s.grpc.Stop()
		<-done
	})
	return s
}

// FailWith makes every later call whose full method name ends with suffix
// (e.g. "/DeleteVolume", or "" for every call) return err, which should be a
// gRPC status error (status.Error(codes.Internal, "disk on fire")).
func (s *Server) FailWith(suffix string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = func(method string) error {
		if strings.HasSuffix(method, suffix) {
			return err
		}
		return nil
	}
}

// Requests returns the requests received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// LastRequest returns the last request whose method name ends with suffix
// (e.g. "/MountVolume"), or nil.
func (s *Server) LastRequest(suffix string) proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		if strings.HasSuffix(s.requests[i].Method, suffix) {
			return s.requests[i].Message
		}
	}
	return nil
}

// SetVolume adds or replaces a volume as is, for tests that need a state the
// API cannot make (exports, a degraded state).
func (s *Server) SetVolume(v *stratav1.Volume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vols[v.Name] = proto.Clone(v).(*stratav1.Volume)
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	if m, ok := req.(proto.Message); ok {
		s.requests = append(s.requests, Request{Method: info.FullMethod, Message: proto.Clone(m)})
	}
	fail := s.fail
	s.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != "Bearer "+Token {
		return nil, status.Error(codes.Unauthenticated, "invalid or missing token")
	}
	if fail != nil {
		if err := fail(info.FullMethod); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := handler(ctx, req)
	if m, ok := resp.(proto.Message); ok && err == nil {
		// The handlers return the server's own records; marshal a copy
		// taken under the lock.
		resp = proto.Clone(m)
	}
	return resp, err
}

// The handlers below run with s.mu held (see intercept).

func errf(c codes.Code, format string, args ...any) error {
	return status.Errorf(c, format, args...)
}

func nameErr(kind, name string) error {
	if err := errdefs.ValidateName(kind, name); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func (s *Server) snapshot(ref string) (*stratav1.Snapshot, error) {
	vol, name, ok := strings.Cut(ref, "@")
	if !ok {
		return nil, errf(codes.InvalidArgument, "snapshot %q must be VOL@SNAP", ref)
	}
	if _, ok := s.vols[vol]; !ok {
		return nil, errf(codes.NotFound, "volume %q not found", vol)
	}
	for _, sn := range s.snaps[vol] {
		if sn.Name == name {
			return sn, nil
		}
	}
	return nil, errf(codes.NotFound, "snapshot %q not found", ref)
}

func (s *Server) volume(name string) (*stratav1.Volume, error) {
	v, ok := s.vols[name]
	if !ok {
		return nil, errf(codes.NotFound, "volume %q not found", name)
	}
	return v, nil
}

func busy(v *stratav1.Volume, what string) error {
	if v.ExportConnections > 0 {
		return errf(codes.FailedPrecondition, "cannot %s volume %q: it is exported (%d NBD connections)", what, v.Name, v.ExportConnections)
	}
	if len(v.Mounts) > 0 {
		return errf(codes.FailedPrecondition, "cannot %s volume %q: it is mounted at %s", what, v.Name, strings.Join(v.Mounts, ", "))
	}
	return nil
}

func (s *Server) create(name string, size int64, from string, labels map[string]string) (*stratav1.Volume, error) {
	if err := nameErr("volume", name); err != nil {
		return nil, err
	}
	var src *stratav1.Snapshot
	if from != "" {
		var err error
		if src, err = s.snapshot(from); err != nil {
			return nil, err
		}
		if size == 0 {
			size = src.SizeBytes
		}
		if size < src.SizeBytes {
			return nil, errf(codes.InvalidArgument, "size %d is smaller than snapshot %s (%d bytes)", size, from, src.SizeBytes)
		}
	}
	if size <= 0 {
		return nil, errf(codes.InvalidArgument, "size must be positive")
	}
	if v, ok := s.vols[name]; ok {
		if v.SizeBytes == size && v.Parent == from && maps.Equal(v.Labels, labels) {
			return v, nil
		}
		return nil, errf(codes.AlreadyExists, "volume %q already exists", name)
	}
	v := &stratav1.Volume{Name: name, SizeBytes: size, Parent: from, Node: "node-1", State: "ready", Labels: labels,
		CreatedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), Layers: 1}
	if src != nil {
		src.Clones++
		v.Layers = 2
	}
	s.vols[name] = v
	return v, nil
}

type volumes struct {
	stratav1.UnimplementedVolumeServiceServer
	s *Server
}

func (f volumes) CreateVolume(_ context.Context, r *stratav1.CreateVolumeRequest) (*stratav1.Volume, error) {
	return f.s.withLimits(r.Qos, r.FromSnapshot != "")(f.s.create(r.Name, r.SizeBytes, r.FromSnapshot, r.Labels))
}

func (f volumes) ListVolumes(context.Context, *stratav1.ListVolumesRequest) (*stratav1.ListVolumesResponse, error) {
	resp := &stratav1.ListVolumesResponse{}
	for _, v := range f.s.vols {
		resp.Volumes = append(resp.Volumes, v)
	}
	sort.Slice(resp.Volumes, func(i, j int) bool { return resp.Volumes[i].Name < resp.Volumes[j].Name })
	return resp, nil
}

func (f volumes) GetVolume(_ context.Context, r *stratav1.GetVolumeRequest) (*stratav1.Volume, error) {
	return f.s.volume(r.Name)
}

func (f volumes) DeleteVolume(_ context.Context, r *stratav1.DeleteVolumeRequest) (*stratav1.DeleteVolumeResponse, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	if err := busy(v, "delete"); err != nil {
		return nil, err
	}
	if v.Parent != "" {
		if sn, err := f.s.snapshot(v.Parent); err == nil {
			sn.Clones--
		}
	}
	delete(f.s.vols, r.Name)
	delete(f.s.snaps, r.Name)
	return &stratav1.DeleteVolumeResponse{}, nil
}

func (f volumes) ResizeVolume(_ context.Context, r *stratav1.ResizeVolumeRequest) (*stratav1.Volume, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	if r.SizeBytes < v.SizeBytes {
		return nil, errf(codes.FailedPrecondition, "cannot shrink volume %q from %d to %d bytes", r.Name, v.SizeBytes, r.SizeBytes)
	}
	v.SizeBytes = r.SizeBytes
	return v, nil
}

func (f volumes) CloneVolume(_ context.Context, r *stratav1.CloneVolumeRequest) (*stratav1.Volume, error) {
	return f.s.withLimits(r.Qos, true)(f.s.create(r.Name, r.SizeBytes, r.Source, r.Labels))
}

func (f volumes) RevertVolume(_ context.Context, r *stratav1.RevertVolumeRequest) (*stratav1.Volume, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	sn, err := f.s.snapshot(r.Name + "@" + r.Snapshot)
	if err != nil {
		return nil, err
	}
	if err := busy(v, "revert"); err != nil {
		return nil, err
	}
	v.SizeBytes = sn.SizeBytes
	return v, nil
}

func (f volumes) ExportVolume(_ context.Context, r *stratav1.ExportVolumeRequest) (*stratav1.ExportVolumeResponse, error) {
	if _, err := f.s.volume(r.Name); err != nil {
		return nil, err
	}
	return &stratav1.ExportVolumeResponse{Uri: "nbd://" + NBDAddress + "/" + r.Name}, nil
}

func (f volumes) MountVolume(_ context.Context, r *stratav1.MountVolumeRequest) (*stratav1.MountVolumeResponse, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	if !path.IsAbs(r.Target) {
		return nil, errf(codes.InvalidArgument, "mount target %q is not an absolute path", r.Target)
	}
	fs := r.FsType
	if fs == "" {
		fs = "ext4"
	}
	if fs != "ext4" && fs != "xfs" {
		return nil, errf(codes.InvalidArgument, "filesystem %q is not supported (ext4 or xfs)", fs)
	}
	for _, m := range v.Mounts {
		if m == r.Target {
			return &stratav1.MountVolumeResponse{Target: r.Target, FsType: fs, Device: "/dev/loop0"}, nil
		}
	}
	v.Mounts = append(v.Mounts, r.Target)
	return &stratav1.MountVolumeResponse{Target: r.Target, FsType: fs, Device: "/dev/loop0"}, nil
}

func (f volumes) UnmountVolume(_ context.Context, r *stratav1.UnmountVolumeRequest) (*stratav1.UnmountVolumeResponse, error) {
	for _, v := range f.s.vols {
		for i, m := range v.Mounts {
			if m == r.Target {
				v.Mounts = append(v.Mounts[:i], v.Mounts[i+1:]...)
				return &stratav1.UnmountVolumeResponse{Volume: v.Name}, nil
			}
		}
	}
	return nil, errf(codes.NotFound, "no volume is mounted at %s", r.Target)
}

type snapshots struct {
	stratav1.UnimplementedSnapshotServiceServer
	s *Server
}

func (f snapshots) CreateSnapshot(_ context.Context, r *stratav1.CreateSnapshotRequest) (*stratav1.Snapshot, error) {
	v, err := f.s.volume(r.Volume)
	if err != nil {
		return nil, err
	}
	name := r.Name
	if name == "" {
		name = fmt.Sprintf("snap-%d", len(f.s.snaps[r.Volume])+1)
	}
	if err := nameErr("snapshot", name); err != nil {
		return nil, err
	}
	for _, sn := range f.s.snaps[r.Volume] {
		if sn.Name == name {
			return nil, errf(codes.AlreadyExists, "snapshot %s@%s already exists", r.Volume, name)
		}
	}
	sn := &stratav1.Snapshot{Volume: r.Volume, Name: name, SizeBytes: v.SizeBytes,
		CreatedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	f.s.snaps[r.Volume] = append(f.s.snaps[r.Volume], sn)
	v.SnapshotCount++
	v.Layers++
	return sn, nil
}

func (f snapshots) ListSnapshots(_ context.Context, r *stratav1.ListSnapshotsRequest) (*stratav1.ListSnapshotsResponse, error) {
	resp := &stratav1.ListSnapshotsResponse{}
	if r.Volume != "" {
		if _, err := f.s.volume(r.Volume); err != nil {
			return nil, err
		}
		resp.Snapshots = f.s.snaps[r.Volume]
		return resp, nil
	}
	var names []string
	for n := range f.s.snaps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		resp.Snapshots = append(resp.Snapshots, f.s.snaps[n]...)
	}
	return resp, nil
}

func (f snapshots) DeleteSnapshot(_ context.Context, r *stratav1.DeleteSnapshotRequest) (*stratav1.DeleteSnapshotResponse, error) {
	sn, err := f.s.snapshot(r.Volume + "@" + r.Name)
	if err != nil {
		return nil, err
	}
	list := f.s.snaps[r.Volume]
	for i := range list {
		if list[i] == sn {
			f.s.snaps[r.Volume] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	f.s.vols[r.Volume].SnapshotCount--
	return &stratav1.DeleteSnapshotResponse{KeptForClones: sn.Clones}, nil
}

type cluster struct {
	stratav1.UnimplementedClusterServiceServer
	s *Server
}

func (f cluster) GetStatus(context.Context, *stratav1.GetStatusRequest) (*stratav1.Status, error) {
	st := &stratav1.Status{
		Version:       "v0.0.0-test",
		ClusterId:     "c0ffee",
		VolumeCount:   int32(len(f.s.vols)),
		EtcdEndpoints: []string{"127.0.0.1:2379"},
		Nodes: []*stratav1.Node{{
			Name: "node-1", State: "online", ApiAddress: f.s.Addr, NbdAddress: NBDAddress,
			PoolCapacityBytes: 100 << 30, PoolAvailableBytes: 90 << 30, PoolAllocatedBytes: 10 << 30,
			Labels: map[string]string{"zone": "a"},
		}},
	}
	for _, l := range f.s.snaps {
		st.SnapshotCount += int32(len(l))
	}
	return st, nil
}
