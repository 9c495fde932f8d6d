package dockerplugin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
)

// fakeAPI is an in-memory Strata API. With dataRoot set, volumes are
// directories under it, mounts are real bind mounts and snapshots are copies,
// so that a real Docker engine can use the plugin without a Strata node.
type fakeAPI struct {
	dataRoot string

	mu     sync.Mutex
	vols   map[string]*stratav1.Volume
	snaps  map[string]bool   // VOL@SNAP
	kernel map[string]bool   // targets mounted, when dataRoot is empty
	fs     map[string]string // filesystem made at first mount
	calls  []string
	fail   map[string]error // method -> error to return
}

func newFakeAPI(dataRoot string) *fakeAPI {
	return &fakeAPI{
		dataRoot: dataRoot,
		vols:     map[string]*stratav1.Volume{},
		snaps:    map[string]bool{},
		kernel:   map[string]bool{},
		fs:       map[string]string{},
		fail:     map[string]error{},
	}
}

func (f *fakeAPI) backend() Backend { return Backend{Volumes: f, Snapshots: f} }

// record notes a call and returns the error the test asked for.
func (f *fakeAPI) record(method string, arg string) error {
	f.calls = append(f.calls, method+" "+arg)
	return f.fail[method]
}

func (f *fakeAPI) callsOf(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, method+" ") {
			out = append(out, strings.TrimPrefix(c, method+" "))
		}
	}
	return out
}

func (f *fakeAPI) setFail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, method)
	} else {
		f.fail[method] = err
	}
}

// mountedAt stands in for the kernel's mount table when dataRoot is empty.
func (f *fakeAPI) mountedAt(dir string) bool {
	if f.dataRoot != "" {
		return kernelMountedAt(dir)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kernel[dir]
}

// restartNode forgets every mount, as a node restart whose mounts died does.
func (f *fakeAPI) restartNode() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.vols {
		for _, t := range v.Mounts {
			if f.dataRoot != "" {
				syscall.Unmount(t, syscall.MNT_DETACH)
			}
		}
		v.Mounts = nil
	}
	f.kernel = map[string]bool{}
}

func notFound(kind, name string) error {
	return fmt.Errorf("%s %q not found: %w", kind, name, errdefs.ErrNotFound)
}

func (f *fakeAPI) volDir(name string) string { return filepath.Join(f.dataRoot, "vols", name) }
func (f *fakeAPI) snapDir(vol, snap string) string {
	return filepath.Join(f.dataRoot, "snaps", vol+"@"+snap)
}

func copyTree(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp: %v: %s", err, out)
	}
	return nil
}

func (f *fakeAPI) CreateVolume(ctx context.Context, in *stratav1.CreateVolumeRequest, _ ...grpc.CallOption) (*stratav1.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("CreateVolume", fmt.Sprintf("%s size=%d from=%s", in.Name, in.SizeBytes, in.FromSnapshot)); err != nil {
		return nil, err
	}
	if err := errdefs.ValidateName("volume", in.Name); err != nil {
		return nil, err
	}
	if v, ok := f.vols[in.Name]; ok {
		if v.SizeBytes == in.SizeBytes && v.Parent == in.FromSnapshot {
			return proto.Clone(v).(*stratav1.Volume), nil
		}
		return nil, fmt.Errorf("volume %q exists with another spec: %w", in.Name, errdefs.ErrAlreadyExists)
	}
	v := &stratav1.Volume{Name: in.Name, SizeBytes: in.SizeBytes, Parent: in.FromSnapshot, State: "ready", Node: "fake", CreatedAt: timestamppb.New(time.Now())}
	if in.FromSnapshot != "" {
		if !f.snaps[in.FromSnapshot] {
			return nil, notFound("snapshot", in.FromSnapshot)
		}
		src, _, _ := strings.Cut(in.FromSnapshot, "@")
		if v.SizeBytes == 0 {
			v.SizeBytes = f.vols[src].GetSizeBytes()
		}
		f.fs[in.Name] = f.fs[src]
	}
	if f.dataRoot != "" {
		if in.FromSnapshot != "" {
			vol, snap, _ := strings.Cut(in.FromSnapshot, "@")
			if err := copyTree(f.snapDir(vol, snap), f.volDir(in.Name)); err != nil {
				return nil, err
			}
		} else if err := os.MkdirAll(f.volDir(in.Name), 0o755); err != nil {
			return nil, err
		}
	}
	f.vols[in.Name] = v
	return proto.Clone(v).(*stratav1.Volume), nil
}

func (f *fakeAPI) GetVolume(ctx context.Context, in *stratav1.GetVolumeRequest, _ ...grpc.CallOption) (*stratav1.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["GetVolume"]; err != nil {
		return nil, err
	}
	v, ok := f.vols[in.Name]
	if !ok {
		return nil, notFound("volume", in.Name)
	}
	return proto.Clone(v).(*stratav1.Volume), nil
}

func (f *fakeAPI) ListVolumes(ctx context.Context, in *stratav1.ListVolumesRequest, _ ...grpc.CallOption) (*stratav1.ListVolumesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["ListVolumes"]; err != nil {
		return nil, err
	}
	resp := &stratav1.ListVolumesResponse{}
	for _, v := range f.vols {
		resp.Volumes = append(resp.Volumes, proto.Clone(v).(*stratav1.Volume))
	}
	return resp, nil
}

func (f *fakeAPI) DeleteVolume(ctx context.Context, in *stratav1.DeleteVolumeRequest, _ ...grpc.CallOption) (*stratav1.DeleteVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("DeleteVolume", in.Name); err != nil {
		return nil, err
	}
	v, ok := f.vols[in.Name]
	if !ok {
		return nil, notFound("volume", in.Name)
	}
	if len(v.Mounts) > 0 {
		return nil, fmt.Errorf("volume %q is mounted at %s: %w", in.Name, v.Mounts[0], errdefs.ErrFailedPrecondition)
	}
	delete(f.vols, in.Name)
	if f.dataRoot != "" {
		os.RemoveAll(f.volDir(in.Name))
	}
	return &stratav1.DeleteVolumeResponse{}, nil
}

func (f *fakeAPI) MountVolume(ctx context.Context, in *stratav1.MountVolumeRequest, _ ...grpc.CallOption) (*stratav1.MountVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("MountVolume", in.Name+" "+in.Target+" "+in.FsType); err != nil {
		return nil, err
	}
	v, ok := f.vols[in.Name]
	if !ok {
		return nil, notFound("volume", in.Name)
	}
	for _, o := range f.vols {
		if contains(o.Mounts, in.Target) {
			return nil, fmt.Errorf("%s is already a mount point: %w", in.Target, errdefs.ErrFailedPrecondition)
		}
	}
	if f.fs[in.Name] == "" {
		f.fs[in.Name] = in.FsType
	}
	if f.dataRoot != "" {
		if err := syscall.Mount(f.volDir(in.Name), in.Target, "", syscall.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind mount: %w", err)
		}
	} else {
		f.kernel[in.Target] = true
	}
	v.Mounts = append(v.Mounts, in.Target)
	return &stratav1.MountVolumeResponse{Target: in.Target, FsType: f.fs[in.Name], Device: "/dev/fake"}, nil
}

func (f *fakeAPI) UnmountVolume(ctx context.Context, in *stratav1.UnmountVolumeRequest, _ ...grpc.CallOption) (*stratav1.UnmountVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("UnmountVolume", in.Target); err != nil {
		return nil, err
	}
	for _, v := range f.vols {
		if contains(v.Mounts, in.Target) {
			if f.dataRoot != "" {
				if err := syscall.Unmount(in.Target, 0); err != nil {
					return nil, fmt.Errorf("unmount %s: %w", in.Target, err)
				}
			}
			delete(f.kernel, in.Target)
			v.Mounts = remove(v.Mounts, in.Target)
			return &stratav1.UnmountVolumeResponse{Volume: v.Name}, nil
		}
	}
	return nil, fmt.Errorf("nothing mounted at %s: %w", in.Target, errdefs.ErrNotFound)
}

func (f *fakeAPI) CreateSnapshot(ctx context.Context, in *stratav1.CreateSnapshotRequest, _ ...grpc.CallOption) (*stratav1.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("CreateSnapshot", in.Volume+"@"+in.Name); err != nil {
		return nil, err
	}
	v, ok := f.vols[in.Volume]
	if !ok {
		return nil, notFound("volume", in.Volume)
	}
	key := in.Volume + "@" + in.Name
	if f.snaps[key] {
		return nil, fmt.Errorf("snapshot %s: %w", key, errdefs.ErrAlreadyExists)
	}
	if f.dataRoot != "" {
		if err := copyTree(f.volDir(in.Volume), f.snapDir(in.Volume, in.Name)); err != nil {
			return nil, err
		}
	}
	f.snaps[key] = true
	v.SnapshotCount++
	return &stratav1.Snapshot{Volume: in.Volume, Name: in.Name, SizeBytes: v.SizeBytes, CreatedAt: timestamppb.Now()}, nil
}

func (f *fakeAPI) DeleteSnapshot(ctx context.Context, in *stratav1.DeleteSnapshotRequest, _ ...grpc.CallOption) (*stratav1.DeleteSnapshotResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("DeleteSnapshot", in.Volume+"@"+in.Name); err != nil {
		return nil, err
	}
	key := in.Volume + "@" + in.Name
	if !f.snaps[key] {
		return nil, notFound("snapshot", key)
	}
	delete(f.snaps, key)
	if v, ok := f.vols[in.Volume]; ok {
		v.SnapshotCount--
	}
	return &stratav1.DeleteSnapshotResponse{}, nil
}
