package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/client/clienttest"
	"github.com/strata-storage/strata/internal/errdefs"
)

func dial(t *testing.T, addr, token string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialCalls(t *testing.T) {
	srv := clienttest.New(t)
	c := dial(t, srv.Addr, clienttest.Token)
	ctx := context.Background()
	v, err := c.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: "a", SizeBytes: 1 << 20})
	if err != nil || v.Name != "a" || v.SizeBytes != 1<<20 {
		t.Fatalf("CreateVolume = %v, %v", v, err)
	}
	if _, err := c.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: "a", Name: "s"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
	if err != nil || st.VolumeCount != 1 || st.SnapshotCount != 1 {
		t.Fatalf("GetStatus = %v, %v", st, err)
	}
	if c.API() != srv.Addr {
		t.Errorf("API() = %q, want %q", c.API(), srv.Addr)
	}
	// A URL pasted from the REST docs works too.
	c2 := dial(t, "http://"+srv.Addr+"/", clienttest.Token)
	if _, err := c2.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorTranslation(t *testing.T) {
	srv := clienttest.New(t)
	c := dial(t, srv.Addr, clienttest.Token)
	ctx := context.Background()

	_, err := c.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: "missing"})
	if err == nil || err.Error() != `volume "missing" not found` {
		t.Fatalf("GetVolume(missing) error = %v, want the server's message only", err)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("status.Code = %v, want NotFound", status.Code(err))
	}
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code() != codes.NotFound {
		t.Errorf("errors.As(*client.Error) failed: %#v", err)
	}

	for _, tc := range []struct {
		code codes.Code
		msg  string
		want error
	}{
		{codes.InvalidArgument, "bad", errdefs.ErrInvalidArgument},
		{codes.AlreadyExists, "dup", errdefs.ErrAlreadyExists},
		{codes.FailedPrecondition, "busy", errdefs.ErrFailedPrecondition},
		{codes.ResourceExhausted, "pool full", errdefs.ErrNoSpace},
		{codes.PermissionDenied, "no", errdefs.ErrPermissionDenied},
		{codes.Unavailable, "etcd is down", errdefs.ErrUnavailable},
		{codes.Internal, "disk on fire", nil},
	} {
		srv.FailWith("/ListVolumes", status.Error(tc.code, tc.msg))
		_, err := c.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
		if err == nil || err.Error() != tc.msg {
			t.Errorf("%v: error %v, want %q", tc.code, err, tc.msg)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%v: errors.Is(%v, %v) = false", tc.code, err, tc.want)
		}
		if status.Code(err) != tc.code {
			t.Errorf("%v: status.Code = %v", tc.code, status.Code(err))
		}
	}
}

func TestWrongToken(t *testing.T) {
	srv := clienttest.New(t)
	c := dial(t, srv.Addr, "wrong")
	_, err := c.Volumes.ListVolumes(context.Background(), &stratav1.ListVolumesRequest{})
	if !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("wrong token: %v", err)
	}
	if strings.Contains(err.Error(), "rpc error") {
		t.Errorf("error keeps gRPC noise: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := dial(t, addr, "tok")
	_, err = c.Cluster.GetStatus(context.Background(), &stratav1.GetStatusRequest{})
	want := "cannot reach the Strata API at " + addr + ": is `strata up` running?"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %v, want it to start with %q", err, want)
	}
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("errors.Is(%v, ErrUnavailable) = false", err)
	}
	if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "rpc error") {
		t.Errorf("error is not one clean line: %q", err)
	}
}

func TestDialNoAddress(t *testing.T) {
	if _, err := client.Dial(context.Background(), " ", "tok"); err == nil || !strings.Contains(err.Error(), "--api") {
		t.Fatalf("Dial with no address: %v", err)
	}
}
