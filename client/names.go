package client

import (
	"fmt"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
)

// ParseSnapshotRef splits a snapshot reference "VOL@SNAP" into the volume
// and snapshot names and checks both (lower-case DNS labels), so that a
// mistake is reported before any call. Errors wrap ErrInvalidArgument.
func ParseSnapshotRef(ref string) (vol, snap string, err error) {
	vol, snap, ok := strings.Cut(ref, "@")
	if !ok || strings.Contains(snap, "@") {
		return "", "", fmt.Errorf("snapshot %q must be written VOL@SNAP (e.g. demo@before): %w", ref, errdefs.ErrInvalidArgument)
	}
	if err := errdefs.ValidateName("volume", vol); err != nil {
		return "", "", err
	}
	if err := errdefs.ValidateName("snapshot", snap); err != nil {
		return "", "", err
	}
	return vol, snap, nil
}
