package server

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/strata-storage/strata/api/strata/v1"
)

// TestMap maps a volume as a block device (root only): the volume lists the
// device, delete is refused while it is mapped, mapping again returns the
// same device (over REST too), and unmap frees the volume.
func TestMap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mapping needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	n := newNode(t)
	ctx := authed(context.Background())
	vc := n.vols()
	must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "b", SizeBytes: 16 * mib}))
	_, err := vc.MapVolume(ctx, &pb.MapVolumeRequest{Name: "missing"})
	wantCode(t, "map of a missing volume", err, codes.NotFound)
	mr := must[*pb.MapVolumeResponse](t, "map")(vc.MapVolume(ctx, &pb.MapVolumeRequest{Name: "b"}))
	if !strings.HasPrefix(mr.Device, "/dev/loop") || mr.ReadOnly {
		t.Fatalf("map: %v", mr)
	}
	v := must[*pb.Volume](t, "get")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "b"}))
	if len(v.Devices) != 1 || v.Devices[0] != mr.Device {
		t.Fatalf("devices: %v, want [%s]", v.Devices, mr.Device)
	}
	_, err = vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "b"})
	wantCode(t, "delete while mapped", err, codes.FailedPrecondition)
	var rm struct{ Device string }
	if code := n.rest("POST", "/v1/volumes/b:map", testToken, map[string]any{}, &rm); code != http.StatusOK || rm.Device != mr.Device {
		t.Fatalf("map again over rest: %d %+v", code, rm)
	}
	must[*pb.UnmapVolumeResponse](t, "unmap")(vc.UnmapVolume(ctx, &pb.UnmapVolumeRequest{Name: "b"}))
	_, err = vc.UnmapVolume(ctx, &pb.UnmapVolumeRequest{Name: "b"})
	wantCode(t, "unmap again", err, codes.NotFound)
	must[*pb.DeleteVolumeResponse](t, "delete after unmap")(vc.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: "b"}))
}
