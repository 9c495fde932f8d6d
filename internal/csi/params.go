package csi

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
)

// StorageClass parameters the driver knows.
const (
	ParamRepl         = "repl"
	ParamFS           = "fs"
	ParamZones        = "zones"
	ParamMaxIOPS      = "max_iops"
	ParamMaxBandwidth = "max_bandwidth"
)

// coPrefix starts the keys the CO adds to parameters (the
// external-provisioner's --extra-create-metadata, the fstype key):
// recorded where useful, never refused.
const coPrefix = "csi.storage.k8s.io/"

// volumeParams is what CreateVolume's parameters ask for.
type volumeParams struct {
	repl  int      // replicas: 1 to 3 (0: 1)
	fs    string   // "", "ext4" or "xfs"
	zones []string // nil: any
	qos   *stratav1.QosLimits
	// The claim the volume is for, when the CO says.
	pvcName, pvcNamespace string
}

// parseVolumeParams reads StorageClass parameters. Unknown keys are
// refused; keys the CO adds (csi.storage.k8s.io/...) are not checked. Errors wrap
// errdefs.ErrInvalidArgument.
func parseVolumeParams(params map[string]string) (volumeParams, error) {
	var p volumeParams
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(params[k])
		bad := func(format string, a ...any) error {
			return fmt.Errorf("parameter %s=%q: %s: %w", k, params[k], fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
		}
		switch k {
		case coPrefix + "pvc/name":
			p.pvcName = v
		case coPrefix + "pvc/namespace":
			p.pvcNamespace = v
		case ParamRepl:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 3 {
				return p, bad("the number of replicas is 1, 2 or 3")
			}
			p.repl = n
		case ParamFS:
			if err := checkFS(v); err != nil {
				return p, bad("%v", err)
			}
			p.fs = v
		case ParamZones:
			for _, z := range strings.Split(v, ",") {
				if z = strings.TrimSpace(z); z != "" {
					p.zones = append(p.zones, z)
				}
			}
			if len(p.zones) == 0 {
				return p, bad("name at least one zone (comma-separated)")
			}
		case ParamMaxIOPS, ParamMaxBandwidth:
			pair, err := qos.ParsePair(v)
			if err != nil {
				return p, bad("%v (READ,WRITE or one value for both; bandwidth in MiB/s)", err)
			}
			if p.qos == nil {
				p.qos = &stratav1.QosLimits{}
			}
			if k == ParamMaxIOPS {
				p.qos.MaxReadIops, p.qos.MaxWriteIops = &pair.Read, &pair.Write
			} else {
				r, w := pair.Read*qos.MiB, pair.Write*qos.MiB
				p.qos.MaxReadBytesPerSecond, p.qos.MaxWriteBytesPerSecond = &r, &w
			}
		default:
			if strings.HasPrefix(k, coPrefix) {
				continue
			}
			return p, fmt.Errorf("unknown parameter %q (known: %s, %s, %s, %s, %s): %w",
				k, ParamRepl, ParamFS, ParamZones, ParamMaxIOPS, ParamMaxBandwidth, errdefs.ErrInvalidArgument)
		}
	}
	return p, nil
}

// checkSnapshotParams refuses VolumeSnapshotClass parameters: snapshots
// take none (keys the CO adds are ignored).
func checkSnapshotParams(params map[string]string) error {
	for k := range params {
		if !strings.HasPrefix(k, coPrefix) {
			return fmt.Errorf("unknown snapshot parameter %q: snapshots take no parameters: %w", k, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func checkFS(fs string) error {
	switch fs {
	case "ext4", "xfs":
		return nil
	}
	return fmt.Errorf("filesystem %q is not supported (ext4 or xfs): %w", fs, errdefs.ErrInvalidArgument)
}

// zoneAllowed says whether a node in zone may hold a volume restricted to
// zones (nil: any zone, or none).
func zoneAllowed(zones []string, zone string) bool {
	return zones == nil || zone != "" && slices.Contains(zones, zone)
}
