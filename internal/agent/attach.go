package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/fusefile"
	"github.com/strata-storage/strata/internal/nbd"
	"github.com/strata-storage/strata/internal/nbddev"
)

// How Mount and Map make a volume a block device of this node (Config.Attach).
const (
	// AttachAuto uses the kernel's NBD client when the kernel has it (the
	// nbd module is loaded, or loads when asked), else FUSE and a loop device.
	AttachAuto = "auto"
	// AttachNBD uses the kernel's NBD client, /dev/nbdN, served by this
	// process; Open fails when the kernel has no nbd module.
	AttachNBD = "nbd"
	// AttachFUSE serves the volume as a FUSE file with a loop device on it,
	// which needs no kernel module beyond fuse and loop.
	AttachFUSE = "fuse"
)

// chooseAttach returns the Attacher of the method mode asks for (nil for
// FUSE and a loop device) and the method's name.
func (a *Agent) chooseAttach(mode string, log *slog.Logger) (fusefile.Attacher, string, error) {
	switch mode {
	case AttachFUSE:
		return nil, AttachFUSE, nil
	case AttachNBD, AttachAuto, "":
		err := nbddev.Available()
		if err == nil {
			srv := nbd.NewServer(exports{a: a, attached: true}, nbd.WithLogger(log))
			return nbdAttacher{nbddev.New(srv, a.fuseDir)}, AttachNBD, nil
		}
		if mode == AttachNBD {
			return nil, "", fmt.Errorf("agent: attach with the kernel NBD client: %w", err)
		}
		log.Info("the kernel NBD client is not available: volumes are mounted through FUSE and loop devices", "reason", err)
		return nil, AttachFUSE, nil
	default:
		return nil, "", fmt.Errorf("agent: attach method %q: want %s, %s or %s: %w",
			mode, AttachAuto, AttachNBD, AttachFUSE, errdefs.ErrInvalidArgument)
	}
}

// nbdAttacher is nbddev's Attacher as fusefile takes it.
type nbdAttacher struct{ a *nbddev.Attacher }

func (n nbdAttacher) Attach(ctx context.Context, name string, readOnly bool) (fusefile.Attached, error) {
	d, err := n.a.Attach(ctx, name, readOnly)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// AttachMethod returns how Mount and Map make block devices: AttachNBD or
// AttachFUSE.
func (a *Agent) AttachMethod() string { return a.attachMethod }
