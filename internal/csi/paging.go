package csi

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tokenPrefix starts the pagination tokens of ListVolumes and
// ListSnapshots: "next:" and the ID the next page starts at. IDs rather than
// offsets, so that entries deleted between two pages do not shift the next
// one.
const tokenPrefix = "next:"

// paginate returns the page of items (sorted by id) that starts at token
// ("" for the first) with at most max entries (0: all), and the token of
// the next page ("" after the last). A token the driver did not make is
// Aborted, as CSI asks; a negative max is InvalidArgument.
func paginate[T any](items []T, id func(T) string, token string, max int32) ([]T, string, error) {
	if max < 0 {
		return nil, "", status.Errorf(codes.InvalidArgument, "max_entries %d is negative", max)
	}
	start := 0
	if token != "" {
		from, ok := strings.CutPrefix(token, tokenPrefix)
		if !ok || from == "" {
			return nil, "", status.Errorf(codes.Aborted, "starting_token %q was not made by this driver", token)
		}
		for start < len(items) && id(items[start]) < from {
			start++
		}
	}
	end := len(items)
	if max > 0 && start+int(max) < end {
		end = start + int(max)
	}
	next := ""
	if end < len(items) {
		next = tokenPrefix + id(items[end])
	}
	return items[start:end], next, nil
}
