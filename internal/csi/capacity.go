package csi

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// capacity limits, as the API's: volumes are made of 4 KiB blocks, up to
// 64 TiB (server.MaxVolumeSize).
const (
	blockSize     = 4096
	maxVolumeSize = 64 << 40
	// defaultSize is the size of a volume whose request names none.
	defaultSize = 1 << 30
)

// volumeSize picks a volume's size from a capacity range and the smallest
// size the volume may have, floor (its content source's, or 0): the required
// bytes rounded up to 4 KiB, at least floor; with no required bytes, floor
// or 1 GiB, but no more than the limit. A range that no size meets is
// OutOfRange; a limit below the required bytes is InvalidArgument.
func volumeSize(r *csi.CapacityRange, floor int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "capacity range %d..%d: bytes must not be negative", req, lim)
	}
	if lim > 0 && lim < req {
		return 0, status.Errorf(codes.InvalidArgument, "capacity range: limit_bytes %d is below required_bytes %d", lim, req)
	}
	size := roundUp(max(req, floor))
	if size == 0 {
		size = defaultSize
		if lim > 0 {
			size = lim / blockSize * blockSize
		}
		size = min(size, defaultSize)
	}
	switch {
	case lim > 0 && size > lim:
		return 0, status.Errorf(codes.OutOfRange, "capacity range %d..%d bytes: volumes are made of %d-byte blocks and may not be smaller than their source (%d bytes), so no size fits",
			req, lim, blockSize, floor)
	case size > maxVolumeSize:
		return 0, status.Errorf(codes.OutOfRange, "%d bytes is more than the largest volume, %d bytes (64 TiB)", size, int64(maxVolumeSize))
	case size == 0:
		return 0, status.Errorf(codes.OutOfRange, "capacity range %d..%d bytes: volumes are at least %d bytes", req, lim, blockSize)
	}
	return size, nil
}

// sizeFits says whether an existing volume of size bytes meets a capacity
// range.
func sizeFits(r *csi.CapacityRange, size int64) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

func roundUp(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }
