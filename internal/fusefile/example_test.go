package fusefile_test

import (
	"context"
	"log"

	"github.com/strata-storage/strata/internal/fusefile"
)

// A node agent clears what a previous run left, then mounts a volume and
// later unmounts it. dev is the volume's engine.
func Example() {
	var dev fusefile.Device // the attached volume
	ctx := context.Background()
	const stateDir = "/var/lib/strata/fusefile"

	if err := fusefile.Cleanup(stateDir); err != nil {
		log.Printf("cleanup of stale mounts: %v", err)
	}
	m, err := fusefile.Mount(ctx, dev, fusefile.Options{
		Name:     "pgdata",
		StateDir: stateDir,
		Target:   "/var/lib/kubelet/plugins/strata/pgdata/globalmount",
		FSType:   "xfs",
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%s on %s (%s, made now: %v)", m.LoopDevice(), m.Target(), m.FSType(), m.Formatted())

	// ... the daemon must keep running while the volume is mounted ...

	if err := m.Unmount(); err != nil {
		log.Fatal(err) // busy: errdefs.ErrFailedPrecondition; try again later
	}
}
