package clienttest

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/qos"
)

// The settings the fake knows, as the real server: values are qos pairs.
var settingKeys = []string{"clone-default-max-iops", "clone-default-max-bandwidth"}

// withLimits gives a volume that create just made its QoS limits: those of
// the request, over the cluster's clone defaults for a clone. A volume that
// existed keeps its limits.
func (s *Server) withLimits(req *stratav1.QosLimits, clone bool) func(*stratav1.Volume, error) (*stratav1.Volume, error) {
	return func(v *stratav1.Volume, err error) (*stratav1.Volume, error) {
		if err != nil || v.Qos != nil {
			return v, err
		}
		var l qos.Limits
		if clone {
			iops, _ := qos.ParsePair(s.setting(settingKeys[0]))
			bw, _ := qos.ParsePair(s.setting(settingKeys[1]))
			l.SetIOPS(iops)
			l.SetBandwidthMiB(bw)
		}
		l, err = overlay(l, req)
		if err != nil {
			delete(s.vols, v.Name)
			return nil, err
		}
		v.Qos = view(l)
		return v, nil
	}
}

func overlay(l qos.Limits, q *stratav1.QosLimits) (qos.Limits, error) {
	if q == nil {
		q = &stratav1.QosLimits{}
	}
	if q.MaxReadIops != nil {
		l.ReadIOPS = *q.MaxReadIops
	}
	if q.MaxWriteIops != nil {
		l.WriteIOPS = *q.MaxWriteIops
	}
	if q.MaxReadBytesPerSecond != nil {
		l.ReadBytesPerSec = *q.MaxReadBytesPerSecond
	}
	if q.MaxWriteBytesPerSecond != nil {
		l.WriteBytesPerSec = *q.MaxWriteBytesPerSecond
	}
	if err := l.Validate(); err != nil {
		return qos.Limits{}, errf(codes.InvalidArgument, "qos: %v", err)
	}
	return l, nil
}

func view(l qos.Limits) *stratav1.QosLimits {
	return &stratav1.QosLimits{MaxReadIops: &l.ReadIOPS, MaxWriteIops: &l.WriteIOPS,
		MaxReadBytesPerSecond: &l.ReadBytesPerSec, MaxWriteBytesPerSecond: &l.WriteBytesPerSec}
}

func limitsOf(q *stratav1.QosLimits) qos.Limits {
	return qos.Limits{ReadIOPS: q.GetMaxReadIops(), WriteIOPS: q.GetMaxWriteIops(),
		ReadBytesPerSec: q.GetMaxReadBytesPerSecond(), WriteBytesPerSec: q.GetMaxWriteBytesPerSecond()}
}

func (s *Server) setting(key string) string {
	if v, ok := s.settings[key]; ok {
		return v
	}
	return "off"
}

func checkKey(key string) error {
	for _, k := range settingKeys {
		if k == key {
			return nil
		}
	}
	return errf(codes.InvalidArgument, "unknown setting %q; the settings are %s", key, strings.Join(settingKeys, ", "))
}

func (f volumes) UpdateVolume(_ context.Context, r *stratav1.UpdateVolumeRequest) (*stratav1.Volume, error) {
	v, err := f.s.volume(r.Name)
	if err != nil {
		return nil, err
	}
	l, err := overlay(limitsOf(v.Qos), r.Qos)
	if err != nil {
		return nil, err
	}
	v.Qos = view(l)
	return v, nil
}

func (f cluster) SetSetting(_ context.Context, r *stratav1.SetSettingRequest) (*stratav1.Setting, error) {
	if err := checkKey(r.Key); err != nil {
		return nil, err
	}
	p, err := qos.ParsePair(r.Value)
	if err != nil {
		return nil, errf(codes.InvalidArgument, "setting %s: value %v", r.Key, err)
	}
	if f.s.settings == nil {
		f.s.settings = map[string]string{}
	}
	f.s.settings[r.Key] = p.String()
	return &stratav1.Setting{Key: r.Key, Value: p.String(), Description: fmt.Sprintf("the %s setting", r.Key)}, nil
}

func (f cluster) GetSettings(_ context.Context, r *stratav1.GetSettingsRequest) (*stratav1.GetSettingsResponse, error) {
	keys := r.Keys
	if len(keys) == 0 {
		keys = settingKeys
	}
	resp := &stratav1.GetSettingsResponse{}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
		resp.Settings = append(resp.Settings, &stratav1.Setting{Key: k, Value: f.s.setting(k), Description: fmt.Sprintf("the %s setting", k)})
	}
	return resp, nil
}
