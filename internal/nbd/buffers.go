package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from pools of power-of-two sizes, 4 KiB to
// MaxPayload, so a busy connection does not allocate per request.
const (
	minBufShift = 12
	maxBufShift = 25 // MaxPayload
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	return max(bits.Len(uint(n-1)), minBufShift) - minBufShift
}

// getBuf returns a buffer of length n (0 < n <= MaxPayload).
func getBuf(n int) *[]byte {
	cls := bufClass(n)
	if p, _ := bufPools[cls].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(cls+minBufShift))
	return &b
}

// putBuf gives back a buffer from getBuf; nil is ignored.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	cls := bufClass(cap(*p))
	if cap(*p) != 1<<(cls+minBufShift) {
		return
	}
	bufPools[cls].Put(p)
}
