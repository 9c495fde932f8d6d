package server

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

// MaxVolumeSize is the largest volume the API makes: 64 TiB.
const MaxVolumeSize = 64 << 40

// volumeSize checks a requested size and rounds it UP to a multiple of
// 4 KiB (chain.BlockSize), the unit volumes are made of: a request for
// 1000000 bytes makes a volume of 1003520 bytes. Sizes must be positive and
// at most MaxVolumeSize.
func volumeSize(n int64) (int64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("size_bytes must be positive, got %d: %w", n, errdefs.ErrInvalidArgument)
	}
	if n > MaxVolumeSize {
		return 0, fmt.Errorf("size %s is larger than the maximum volume size of %s: %w",
			size.Format(n), size.Format(MaxVolumeSize), errdefs.ErrInvalidArgument)
	}
	return (n + chain.BlockSize - 1) / chain.BlockSize * chain.BlockSize, nil
}

// Limits on volume labels.
const (
	maxLabels        = 32
	maxLabelKeyLen   = 253
	maxLabelValueLen = 253
)

// validateLabels checks the labels given to a new volume: at most
// maxLabels; keys of 1 to 253 characters of a-z, A-Z, 0-9 and "._/-";
// values of at most 253 printable ASCII characters.
func validateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d labels given, at most %d are allowed: %w", len(labels), maxLabels, errdefs.ErrInvalidArgument)
	}
	for k, v := range labels {
		if k == "" || len(k) > maxLabelKeyLen {
			return fmt.Errorf("label key %q must have 1 to %d characters: %w", k, maxLabelKeyLen, errdefs.ErrInvalidArgument)
		}
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/-", r)) {
				return fmt.Errorf("label key %q may hold only a-z, A-Z, 0-9 and \"._/-\": %w", k, errdefs.ErrInvalidArgument)
			}
		}
		if len(v) > maxLabelValueLen {
			return fmt.Errorf("value of label %q is longer than %d characters: %w", k, maxLabelValueLen, errdefs.ErrInvalidArgument)
		}
		for _, r := range v {
			if r < 0x20 || r > 0x7e {
				return fmt.Errorf("value of label %q may hold only printable ASCII characters: %w", k, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// cloneSize is volumeSize where 0 means "the snapshot's size".
func cloneSize(n int64) (int64, error) {
	if n == 0 {
		return 0, nil
	}
	return volumeSize(n)
}

// parseSnapshotRef splits "VOL@SNAP" and validates both names.
func parseSnapshotRef(field, ref string) (vol, snap string, err error) {
	vol, snap, ok := strings.Cut(ref, "@")
	if !ok || strings.Contains(snap, "@") {
		return "", "", fmt.Errorf("%s %q must be VOLUME@SNAPSHOT: %w", field, ref, errdefs.ErrInvalidArgument)
	}
	if err := errdefs.ValidateName("volume", vol); err != nil {
		return "", "", err
	}
	if err := errdefs.ValidateName("snapshot", snap); err != nil {
		return "", "", err
	}
	return vol, snap, nil
}

// mountTarget checks a mount target: an absolute directory path.
func mountTarget(t string) (string, error) {
	if t == "" {
		return "", fmt.Errorf("target must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(t) {
		return "", fmt.Errorf("target %q must be an absolute path: %w", t, errdefs.ErrInvalidArgument)
	}
	c := filepath.Clean(t)
	if c == "/" {
		return "", fmt.Errorf("target must not be the root directory: %w", errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func fsType(t string) (string, error) {
	switch t {
	case "", "ext4", "xfs":
		return t, nil
	}
	return "", fmt.Errorf("fs_type %q is not supported (ext4 or xfs): %w", t, errdefs.ErrInvalidArgument)
}
