package dockerplugin

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
)

// Reconnecter is a connection that can be told to reconnect now;
// *grpc.ClientConn (client.Client.Conn()) is one.
type Reconnecter interface {
	ResetConnectBackoff()
}

// retryBudget is how long a call waits for an API that cannot be reached:
// long enough to ride over a node restart, short enough that docker does not
// seem to hang when the node is down.
const retryBudget = 20 * time.Second

// retrier retries calls that fail because the API cannot be reached (a node
// restarting), asking the connection to reconnect at once instead of after
// gRPC's growing backoff.
type retrier struct {
	conn   Reconnecter
	budget time.Duration
}

func retry[T any](ctx context.Context, r *retrier, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(r.budget)
	wait := 100 * time.Millisecond
	for {
		v, err := fn(ctx)
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || !time.Now().Add(wait).Before(deadline) {
			return v, err
		}
		if r.conn != nil {
			r.conn.ResetConnectBackoff()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

type retryVolumes struct {
	r *retrier
	v VolumeAPI
}

func (x retryVolumes) CreateVolume(ctx context.Context, in *stratav1.CreateVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.Volume, error) { return x.v.CreateVolume(ctx, in, opts...) })
}

func (x retryVolumes) GetVolume(ctx context.Context, in *stratav1.GetVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.Volume, error) { return x.v.GetVolume(ctx, in, opts...) })
}

func (x retryVolumes) ListVolumes(ctx context.Context, in *stratav1.ListVolumesRequest, opts ...grpc.CallOption) (*stratav1.ListVolumesResponse, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.ListVolumesResponse, error) {
		return x.v.ListVolumes(ctx, in, opts...)
	})
}

func (x retryVolumes) DeleteVolume(ctx context.Context, in *stratav1.DeleteVolumeRequest, opts ...grpc.CallOption) (*stratav1.DeleteVolumeResponse, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.DeleteVolumeResponse, error) {
		return x.v.DeleteVolume(ctx, in, opts...)
	})
}

func (x retryVolumes) MountVolume(ctx context.Context, in *stratav1.MountVolumeRequest, opts ...grpc.CallOption) (*stratav1.MountVolumeResponse, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.MountVolumeResponse, error) {
		return x.v.MountVolume(ctx, in, opts...)
	})
}

func (x retryVolumes) UnmountVolume(ctx context.Context, in *stratav1.UnmountVolumeRequest, opts ...grpc.CallOption) (*stratav1.UnmountVolumeResponse, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.UnmountVolumeResponse, error) {
		return x.v.UnmountVolume(ctx, in, opts...)
	})
}

type retrySnapshots struct {
	r *retrier
	s SnapshotAPI
}

func (x retrySnapshots) CreateSnapshot(ctx context.Context, in *stratav1.CreateSnapshotRequest, opts ...grpc.CallOption) (*stratav1.Snapshot, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.Snapshot, error) { return x.s.CreateSnapshot(ctx, in, opts...) })
}

func (x retrySnapshots) DeleteSnapshot(ctx context.Context, in *stratav1.DeleteSnapshotRequest, opts ...grpc.CallOption) (*stratav1.DeleteSnapshotResponse, error) {
	return retry(ctx, x.r, func(ctx context.Context) (*stratav1.DeleteSnapshotResponse, error) {
		return x.s.DeleteSnapshot(ctx, in, opts...)
	})
}
