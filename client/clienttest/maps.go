package clienttest

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// MapVolume maps a volume at /dev/loopN (N counts the maps made), or returns
// the device it is mapped at; a mounted volume is refused.
func (f volumes) MapVolume(_ context.Context, r *stratav1.MapVolumeRequest) (*stratav1.MapVolumeResponse, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	if len(v.Devices) > 0 {
		return &stratav1.MapVolumeResponse{Device: v.Devices[0]}, nil
	}
	if len(v.Mounts) > 0 {
		return nil, errf(codes.FailedPrecondition, "volume %q is mounted at %s; unmount it first", r.Name, v.Mounts[0])
	}
	f.s.maps++
	v.Devices = []string{fmt.Sprintf("/dev/loop%d", 10+f.s.maps)}
	return &stratav1.MapVolumeResponse{Device: v.Devices[0], ReadOnly: r.ReadOnly}, nil
}

// UnmapVolume undoes MapVolume; a volume that is not mapped is NotFound.
func (f volumes) UnmapVolume(_ context.Context, r *stratav1.UnmapVolumeRequest) (*stratav1.UnmapVolumeResponse, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	if len(v.Devices) == 0 {
		return nil, errf(codes.NotFound, "volume %q is not mapped", r.Name)
	}
	v.Devices = nil
	return &stratav1.UnmapVolumeResponse{}, nil
}
