// Package unixsock listens on unix sockets that a crash may have left
// behind: the Docker plugin's and the CSI driver's.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ErrServed says that a live process serves the socket already.
var ErrServed = errors.New("served by another process")

// Listen listens on the unix socket path with the given file mode, making
// its directory when missing. A socket file left by a process that died
// (nothing answers on it) is replaced; one that a live process serves is
// refused with an error wrapping ErrServed.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is %w", path, ErrServed)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
