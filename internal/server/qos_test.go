package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/qos"
)

func limitsOf(q *pb.QosLimits) qos.Limits {
	return qos.Limits{
		ReadIOPS:         q.GetMaxReadIops(),
		WriteIOPS:        q.GetMaxWriteIops(),
		ReadBytesPerSec:  q.GetMaxReadBytesPerSecond(),
		WriteBytesPerSec: q.GetMaxWriteBytesPerSecond(),
	}
}

// engineLimits returns the limits the volume's engine runs with.
func (n *testNode) engineLimits(name string) qos.Limits {
	n.t.Helper()
	be, release, err := n.agent.Exports().Open(context.Background(), name)
	if err != nil {
		n.t.Fatal(err)
	}
	defer release()
	return be.(*engine.Volume).Limits()
}

// TestUpdateVolumeLimits: limits given at creation, changed online with
// UpdateVolume (fields left out stay), applied to a running engine at once,
// kept across a restart.
func TestUpdateVolumeLimits(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	vc := n.vols()

	v := must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "prod", SizeBytes: mib,
		Qos: &pb.QosLimits{MaxWriteIops: proto.Int64(20)}}))
	if got := limitsOf(v.Qos); got != (qos.Limits{WriteIOPS: 20}) || v.Qos.MaxReadIops == nil {
		t.Fatalf("created with limits %v, want write IOPS 20 and every field shown", v.Qos)
	}
	_, err := vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "neg", SizeBytes: mib, Qos: &pb.QosLimits{MaxReadIops: proto.Int64(-1)}})
	wantCode(t, "create with a negative limit", err, codes.InvalidArgument)

	_, err = vc.UpdateVolume(ctx, &pb.UpdateVolumeRequest{Name: "nope", Qos: &pb.QosLimits{MaxWriteIops: proto.Int64(1)}})
	wantCode(t, "update of a missing volume", err, codes.NotFound)
	_, err = vc.UpdateVolume(ctx, &pb.UpdateVolumeRequest{Name: "prod", Qos: &pb.QosLimits{MaxWriteBytesPerSecond: proto.Int64(-5)}})
	wantCode(t, "update with a negative limit", err, codes.InvalidArgument)

	// The running engine throttles: 20 write IOPS, a burst of 2, so 12
	// writes take half a second.
	cl, err := dialNBD(n.nbdAddr, "prod")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	timeWrites := func(count int) time.Duration {
		t.Helper()
		start := time.Now()
		for i := 0; i < count; i++ {
			if err := cl.WriteAt(make([]byte, 4096), 0); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start)
	}
	if d := timeWrites(12); d < 400*time.Millisecond {
		t.Fatalf("12 writes at 20 IOPS took %v", d)
	}

	// Removing the write limit and adding a read bandwidth limit: the
	// connection stays and the writes are free at once.
	v = must[*pb.Volume](t, "update")(vc.UpdateVolume(ctx, &pb.UpdateVolumeRequest{Name: "prod",
		Qos: &pb.QosLimits{MaxWriteIops: proto.Int64(0), MaxReadBytesPerSecond: proto.Int64(50 << 20)}}))
	want := qos.Limits{ReadBytesPerSec: 50 << 20}
	if got := limitsOf(v.Qos); got != want {
		t.Fatalf("updated limits %+v, want %+v", got, want)
	}
	if d := timeWrites(100); d > 2*time.Second {
		t.Fatalf("100 unlimited writes took %v", d)
	}
	if got := n.engineLimits("prod"); got != want {
		t.Fatalf("engine limits %+v, want %+v", got, want)
	}
	// Fields left out stay; the same update again is a no-op.
	upd := &pb.UpdateVolumeRequest{Name: "prod", Qos: &pb.QosLimits{MaxReadIops: proto.Int64(1000)}}
	want.ReadIOPS = 1000
	for i := 0; i < 2; i++ {
		v = must[*pb.Volume](t, "update read IOPS")(vc.UpdateVolume(ctx, upd))
		if got := limitsOf(v.Qos); got != want {
			t.Fatalf("update %d: limits %+v, want %+v", i, got, want)
		}
	}
	if v = must[*pb.Volume](t, "empty update")(vc.UpdateVolume(ctx, &pb.UpdateVolumeRequest{Name: "prod"})); limitsOf(v.Qos) != want {
		t.Fatalf("an empty update changed the limits to %v", v.Qos)
	}
	cl.Close()

	// Recorded in etcd: the engine that starts after a restart has them.
	n.restart()
	if got := n.engineLimits("prod"); got != want {
		t.Fatalf("engine limits after restart %+v, want %+v", got, want)
	}
	v = must[*pb.Volume](t, "get")(n.vols().GetVolume(ctx, &pb.GetVolumeRequest{Name: "prod"}))
	if got := limitsOf(v.Qos); got != want {
		t.Fatalf("limits after restart %+v, want %+v", got, want)
	}
}

// TestCloneDefaultLimits: cluster settings give clones a default limit; a
// limit in the request overrides it; plain volumes do not get it.
func TestCloneDefaultLimits(t *testing.T) {
	n := newNode(t)
	ctx := authed(context.Background())
	vc, sc, cc := n.vols(), n.snaps(), n.cluster()

	all := must[*pb.GetSettingsResponse](t, "get settings")(cc.GetSettings(ctx, &pb.GetSettingsRequest{}))
	if len(all.Settings) != 2 || all.Settings[0].Key != SettingCloneDefaultMaxIOPS || all.Settings[0].Value != "off" ||
		all.Settings[1].Key != SettingCloneDefaultMaxBandwidth || all.Settings[1].Value != "off" || all.Settings[0].Description == "" {
		t.Fatalf("settings of a new cluster: %v", all.Settings)
	}
	_, err := cc.SetSetting(ctx, &pb.SetSettingRequest{Key: "clone-default-iops", Value: "5"})
	wantCode(t, "unknown setting", err, codes.InvalidArgument)
	if !strings.Contains(err.Error(), SettingCloneDefaultMaxIOPS) {
		t.Errorf("the refusal of an unknown key does not list the keys: %v", err)
	}
	_, err = cc.GetSettings(ctx, &pb.GetSettingsRequest{Keys: []string{"nope"}})
	wantCode(t, "get an unknown setting", err, codes.InvalidArgument)
	for _, bad := range []string{"-1", "fast", "1,2,3", ""} {
		_, err := cc.SetSetting(ctx, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: bad})
		wantCode(t, "setting "+bad, err, codes.InvalidArgument)
	}
	st := must[*pb.Setting](t, "set iops")(cc.SetSetting(ctx, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: "500"}))
	if st.Value != "500" {
		t.Fatalf("set returned %v", st)
	}
	must[*pb.Setting](t, "set bandwidth")(cc.SetSetting(ctx, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxBandwidth, Value: "OFF, 100"}))
	one := must[*pb.GetSettingsResponse](t, "get one")(cc.GetSettings(ctx, &pb.GetSettingsRequest{Keys: []string{SettingCloneDefaultMaxBandwidth}}))
	if len(one.Settings) != 1 || one.Settings[0].Value != "off,100" {
		t.Fatalf("bandwidth setting reads %v, want the canonical off,100", one.Settings)
	}

	base := must[*pb.Volume](t, "create")(vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "prod", SizeBytes: mib}))
	if !limitsOf(base.Qos).IsZero() {
		t.Fatalf("a plain volume got limits %v", base.Qos)
	}
	must[*pb.Snapshot](t, "snapshot")(sc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: "prod", Name: "s"}))
	def := qos.Limits{ReadIOPS: 500, WriteIOPS: 500, WriteBytesPerSec: 100 << 20}
	for _, tc := range []struct {
		name string
		make func() (*pb.Volume, error)
		want qos.Limits
	}{
		{"c1", func() (*pb.Volume, error) {
			return vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "prod@s", Name: "c1"})
		}, def},
		{"c2", func() (*pb.Volume, error) {
			return vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "c2", FromSnapshot: "prod@s"})
		}, def},
		{"c3", func() (*pb.Volume, error) { // explicit limits override the default, per field
			return vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "prod@s", Name: "c3",
				Qos: &pb.QosLimits{MaxWriteIops: proto.Int64(0), MaxReadIops: proto.Int64(2000)}})
		}, qos.Limits{ReadIOPS: 2000, WriteBytesPerSec: 100 << 20}},
		{"c4", func() (*pb.Volume, error) {
			return vc.CreateVolume(ctx, &pb.CreateVolumeRequest{Name: "c4", FromSnapshot: "prod@s",
				Qos: &pb.QosLimits{MaxWriteIops: proto.Int64(250)}})
		}, qos.Limits{ReadIOPS: 500, WriteIOPS: 250, WriteBytesPerSec: 100 << 20}},
	} {
		v := must[*pb.Volume](t, "clone "+tc.name)(tc.make())
		if got := limitsOf(v.Qos); got != tc.want {
			t.Errorf("clone %s has limits %+v, want %+v", tc.name, got, tc.want)
		}
		if got := n.engineLimits(tc.name); got != tc.want {
			t.Errorf("engine of clone %s has limits %+v, want %+v", tc.name, got, tc.want)
		}
	}
	_, err = vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "prod@s", Name: "c5", Qos: &pb.QosLimits{MaxReadIops: proto.Int64(-3)}})
	wantCode(t, "clone with a negative limit", err, codes.InvalidArgument)

	// Turning the default off leaves existing clones as they are.
	must[*pb.Setting](t, "unset")(cc.SetSetting(ctx, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxIOPS, Value: "0"}))
	must[*pb.Setting](t, "unset")(cc.SetSetting(ctx, &pb.SetSettingRequest{Key: SettingCloneDefaultMaxBandwidth, Value: "off"}))
	v := must[*pb.Volume](t, "clone c6")(vc.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: "prod@s", Name: "c6"}))
	if !limitsOf(v.Qos).IsZero() {
		t.Fatalf("clone made with the defaults off has limits %v", v.Qos)
	}
	if v = must[*pb.Volume](t, "get c1")(vc.GetVolume(ctx, &pb.GetVolumeRequest{Name: "c1"})); limitsOf(v.Qos) != def {
		t.Fatalf("c1 lost its limits: %v", v.Qos)
	}
}

// TestQoSOverREST: PATCH /v1/volumes/{name} and the settings endpoints.
func TestQoSOverREST(t *testing.T) {
	n := newNode(t)
	type volume struct {
		Name string `json:"name"`
		Qos  struct {
			MaxReadIops            string `json:"maxReadIops"`
			MaxWriteIops           string `json:"maxWriteIops"`
			MaxReadBytesPerSecond  string `json:"maxReadBytesPerSecond"`
			MaxWriteBytesPerSecond string `json:"maxWriteBytesPerSecond"`
		} `json:"qos"`
	}
	var v volume
	if code := n.rest("POST", "/v1/volumes", testToken, map[string]any{"name": "r", "sizeBytes": mib, "qos": map[string]any{"maxWriteIops": 300}}, &v); code != 200 || v.Qos.MaxWriteIops != "300" || v.Qos.MaxReadIops != "0" {
		t.Fatalf("create: %d %+v", code, v)
	}
	if code := n.rest("PATCH", "/v1/volumes/r", testToken, map[string]any{"qos": map[string]any{"maxReadBytesPerSecond": "1048576"}}, &v); code != 200 ||
		v.Qos.MaxWriteIops != "300" || v.Qos.MaxReadBytesPerSecond != "1048576" {
		t.Fatalf("patch: %d %+v", code, v)
	}
	var e struct {
		Message string `json:"message"`
	}
	if code := n.rest("PATCH", "/v1/volumes/nope", testToken, map[string]any{"qos": map[string]any{"maxReadIops": 1}}, &e); code != http.StatusNotFound {
		t.Fatalf("patch of a missing volume: %d %+v", code, e)
	}
	var st struct{ Key, Value string }
	if code := n.rest("PUT", "/v1/settings/clone-default-max-iops", testToken, map[string]any{"value": "1000,500"}, &st); code != 200 || st.Value != "1000,500" {
		t.Fatalf("put setting: %d %+v", code, st)
	}
	if code := n.rest("PUT", "/v1/settings/bogus", testToken, map[string]any{"value": "1"}, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, "unknown setting") {
		t.Fatalf("put an unknown setting: %d %+v", code, e)
	}
	var list struct {
		Settings []struct{ Key, Value string } `json:"settings"`
	}
	if code := n.rest("GET", "/v1/settings", testToken, nil, &list); code != 200 || len(list.Settings) != 2 || list.Settings[0].Value != "1000,500" {
		t.Fatalf("get settings: %d %+v", code, list)
	}
}
