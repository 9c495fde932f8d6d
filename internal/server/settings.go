package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/qos"
)

// Keys of the cluster settings.
const (
	SettingCloneDefaultMaxIOPS      = "clone-default-max-iops"
	SettingCloneDefaultMaxBandwidth = "clone-default-max-bandwidth"
)

// setting describes one cluster setting the API knows.
type setting struct {
	key         string
	description string
	// apply sets the limits the value stands for (clone defaults).
	apply func(l *qos.Limits, p qos.Pair)
}

// knownSettings lists the settings in the order GetSettings returns them.
// Every value is a qos.Pair; unset means "off".
var knownSettings = []setting{
	{
		key:         SettingCloneDefaultMaxIOPS,
		description: "IOPS limit of new clones whose request sets none: READ,WRITE or one value for both; off for no limit",
		apply:       (*qos.Limits).SetIOPS,
	},
	{
		key:         SettingCloneDefaultMaxBandwidth,
		description: "bandwidth limit of new clones whose request sets none, in MiB/s: READ,WRITE or one value for both; off for no limit",
		apply:       (*qos.Limits).SetBandwidthMiB,
	},
}

func lookupSetting(key string) (setting, error) {
	for _, st := range knownSettings {
		if st.key == key {
			return st, nil
		}
	}
	keys := make([]string, len(knownSettings))
	for i, st := range knownSettings {
		keys[i] = st.key
	}
	return setting{}, fmt.Errorf("unknown setting %q; the settings are %s: %w", key, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
}

// SetSetting validates a setting's value and stores it in its canonical
// form ("1000,500", "500", "off").
func (s *Server) SetSetting(ctx context.Context, req *pb.SetSettingRequest) (*pb.Setting, error) {
	def, err := lookupSetting(req.Key)
	if err != nil {
		return nil, err
	}
	p, err := qos.ParsePair(req.Value)
	if err != nil {
		return nil, fmt.Errorf("setting %s: value %w", req.Key, err)
	}
	st, err := s.meta.PutSetting(ctx, meta.Setting{Key: def.key, Value: p.String(), Updated: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	return &pb.Setting{Key: st.Key, Value: st.Value, Description: def.description}, nil
}

// GetSettings returns the settings named in req.Keys, or every setting.
func (s *Server) GetSettings(ctx context.Context, req *pb.GetSettingsRequest) (*pb.GetSettingsResponse, error) {
	defs := knownSettings
	if len(req.Keys) > 0 {
		defs = nil
		for _, k := range req.Keys {
			def, err := lookupSetting(k)
			if err != nil {
				return nil, err
			}
			defs = append(defs, def)
		}
	}
	values, err := s.settingValues(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.GetSettingsResponse{}
	for _, def := range defs {
		resp.Settings = append(resp.Settings, &pb.Setting{Key: def.key, Value: values[def.key], Description: def.description})
	}
	return resp, nil
}

// settingValues returns the value of every known setting, "off" for those
// never set.
func (s *Server) settingValues(ctx context.Context) (map[string]string, error) {
	stored, err := s.meta.ListSettings(ctx)
	if err != nil {
		return nil, err
	}
	values := map[string]string{}
	for _, def := range knownSettings {
		values[def.key] = qos.Pair{}.String()
	}
	for _, st := range stored {
		if _, ok := values[st.Key]; ok {
			values[st.Key] = st.Value
		}
	}
	return values, nil
}

// cloneDefaults returns the limits a new clone gets for what its request
// leaves out.
func (s *Server) cloneDefaults(ctx context.Context) (qos.Limits, error) {
	values, err := s.settingValues(ctx)
	if err != nil {
		return qos.Limits{}, err
	}
	var l qos.Limits
	for _, def := range knownSettings {
		p, err := qos.ParsePair(values[def.key])
		if err != nil {
			return qos.Limits{}, fmt.Errorf("setting %s is recorded as %q, which is not valid (set it again): %v: %w",
				def.key, values[def.key], err, errdefs.ErrFailedPrecondition)
		}
		def.apply(&l, p)
	}
	return l, nil
}
