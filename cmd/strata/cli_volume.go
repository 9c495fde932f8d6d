package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

func newVolumeCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("volume", "Create, list, snapshot-clone, export and mount volumes",
		`A volume is a thin-provisioned block device made of a chain of layers.
Export it over NBD for VMs and NBD clients, or mount its filesystem on the node.`,
		`  strata volume create demo --size 1GiB
  strata volume list
  strata volume export demo`)
	cmd.Aliases = []string{"volumes", "vol"}
	cmd.AddCommand(
		newVolumeCreateCmd(cf), newVolumeListCmd(cf), newVolumeInspectCmd(cf),
		newVolumeDeleteCmd(cf), newVolumeResizeCmd(cf), newVolumeCloneCmd(cf),
		newVolumeRevertCmd(cf), newVolumeExportCmd(cf), newVolumeMountCmd(cf),
		newVolumeUnmountCmd(cf), newVolumeUpdateCmd(cf), newVolumeMapCmd(cf),
		newVolumeUnmapCmd(cf), newVolumeAttachCmd(cf), newVolumeHAUpdateCmd(cf),
		newVolumeCheckCmd(cf),
	)
	return cmd
}

func newVolumeCreateCmd(cf *clientFlags) *cobra.Command {
	var sizeFlag, from string
	var labels map[string]string
	var limits qosFlags
	var repl int
	var nodes, zones []string
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--repl N] [--nodes N1,N2] [--zones A,B] [--from VOL@SNAP] [--max-iops R,W] [--max-bandwidth R,W]",
		Short: "Create a volume, empty or as a thin clone of a snapshot",
		Long: `Create a thin-provisioned volume: it takes no pool space until written.
With --from it is a thin clone of a snapshot, made instantly whatever the size;
--size may then be omitted (the snapshot's size) or larger.
--max-iops and --max-bandwidth (MiB/s) limit the volume's I/O: READ,WRITE or one
value for both; a clone gets the cluster's clone-default limits for those not
given (see strata cluster get). strata volume update changes them later.
Creating a volume that exists with the same spec succeeds (its limits are left
as they are). Prints the name.
--repl 2 or 3 keeps that many replicas on distinct nodes, spread across zones
then racks (node labels), on the nodes with the most free space; --nodes and
--zones restrict where they may go. A request that cannot be met is refused
with the reason. A clone (--from) has one replica, on this node; with --repl
its replicas go on nodes holding the source's (see strata volume clone).`,
		Example: `  strata volume create demo --size 10GiB
  strata volume create db --size 50GiB --repl 3
  strata volume create db2 --size 50GiB --repl 2 --zones a,b
  strata volume create demo-test --from demo@before
  strata volume create db --size 20GiB --max-iops 2000,1000 --max-bandwidth 200`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			if from != "" {
				if _, _, err := client.ParseSnapshotRef(from); err != nil {
					return err
				}
			}
			var n int64
			switch {
			case sizeFlag != "":
				var err error
				if n, err = size.Parse(sizeFlag); err != nil {
					return err
				}
			case from == "":
				return fmt.Errorf("--size is required (e.g. --size 10GiB) unless --from names a snapshot: %w", errdefs.ErrInvalidArgument)
			}
			lim, err := limits.limits(cmd)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: name, SizeBytes: n, FromSnapshot: from, Labels: labels, Qos: lim,
					Replicas: int32(repl), Nodes: nodes, Zones: zones})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), v.Name)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&sizeFlag, "size", "", "size: 512MiB, 10GiB, 1T or bytes (required unless --from)")
	cmd.Flags().StringVar(&from, "from", "", "make a thin clone of snapshot VOL@SNAP")
	cmd.Flags().IntVar(&repl, "repl", 1, "number of replicas, on distinct nodes: 1 to 3")
	cmd.Flags().StringSliceVar(&nodes, "nodes", nil, "place replicas only on these nodes")
	cmd.Flags().StringSliceVar(&zones, "zones", nil, "place replicas only in these zones (node label zone)")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "label KEY=VALUE to record with the volume (repeatable)")
	limits.add(cmd, " (a clone gets the cluster default when not given)")
	return cmd
}

func newVolumeListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List volumes",
		Long: `List every volume with its size, the pool space its own layers hold, its
in-sync and wanted replicas (2/3 is degraded), snapshot count, the snapshot it
was cloned from, its state, the node its engine runs on, NBD connections, its
IOPS and bandwidth limits (READ,WRITE or one value for both; - for none) and
mount points. -o json and -o yaml print the API's fields (as the REST API does).`,
		Example: `  strata volume list
  strata volume list -o json | jq -r '.volumes[].name'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "NAME\tSIZE\tALLOCATED\tREPLICAS\tSNAPSHOTS\tPARENT\tSTATE\tNODE\tEXPORTS\tMAX-IOPS\tMAX-BW\tMOUNTS")
				for _, v := range resp.Volumes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, size.Format(v.SizeBytes),
						size.Format(v.AllocatedBytes), formatReplicaCount(v), v.SnapshotCount, dash(v.Parent), dash(v.State), dash(v.Node),
						v.ExportConnections, formatIOPS(v.Qos), formatBandwidth(v.Qos), dash(strings.Join(v.Mounts, ",")))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newVolumeInspectCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show the details of a volume",
		Long: `Show everything the API knows about one volume: size, allocation, parent
snapshot, snapshot count, layer depth, the node its engine runs on, state,
replicas (in sync/wanted, the epoch, and each replica's node and mode:
in-sync, catching-up or out), NBD connections, mounts,
raw block devices it is mapped as,
IOPS and bandwidth limits (READ,WRITE or one value for both; - for none), and
the tenant that owns it (- for a volume of no tenant, which only admins manage).`,
		Example: `  strata volume inspect demo
  strata volume inspect demo -o yaml`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, v)
				}
				tw := newTable(cmd.OutOrStdout())
				for _, kv := range [][2]string{
					{"Name", v.Name},
					{"Size", size.Format(v.SizeBytes) + " (" + strconv.FormatInt(v.SizeBytes, 10) + " bytes)"},
					{"Allocated", size.Format(v.AllocatedBytes)},
					{"Parent", dash(v.Parent)},
					{"Snapshots", strconv.Itoa(int(v.SnapshotCount))},
					{"Layers", strconv.Itoa(int(v.Layers))},
					{"Node", dash(v.Node)},
					{"State", dash(v.State)},
					{"Replicas", formatReplicaCount(v) + " in sync, epoch " + strconv.FormatUint(v.Epoch, 10)},
					{"Replica nodes", dash(formatReplicas(v))},
					{"Exports", strconv.Itoa(int(v.ExportConnections))},
					{"Mounts", dash(strings.Join(v.Mounts, ", "))},
					{"Devices", dash(strings.Join(v.Devices, ", "))},
					{"Max IOPS", formatIOPS(v.Qos)},
					{"Max bandwidth", formatBandwidth(v.Qos)},
					{"Labels", dash(formatLabels(v.Labels))},
					{"Tenant", dash(v.Tenant)},
					{"Created", formatTime(v.CreatedAt)},
				} {
					fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newVolumeDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a volume",
		Long: `Delete a volume and its snapshots. Refused while the volume is exported
(NBD clients connected) or mounted. Data that clones share stays until the last
clone is deleted. There is no confirmation prompt.`,
		Example: `  strata volume delete demo-test`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Volumes.DeleteVolume(ctx, &stratav1.DeleteVolumeRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted volume %s\n", args[0])
				return nil
			})
		},
	}
}

func newVolumeResizeCmd(cf *clientFlags) *cobra.Command {
	var sizeFlag string
	cmd := &cobra.Command{
		Use:   "resize NAME --size SIZE",
		Short: "Grow a volume online",
		Long: `Grow a volume to a new size, online: exports and mounts stay. Shrinking
is refused. Filesystems mounted with strata volume mount grow with it, online
(xfs_growfs, resize2fs); grow a filesystem you put on the NBD export yourself.`,
		Example: `  strata volume resize demo --size 20GiB`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			if sizeFlag == "" {
				return fmt.Errorf("--size is required (e.g. --size 20GiB): %w", errdefs.ErrInvalidArgument)
			}
			n, err := size.Parse(sizeFlag)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.ResizeVolume(ctx, &stratav1.ResizeVolumeRequest{Name: args[0], SizeBytes: n})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "resized volume %s to %s\n", v.Name, size.Format(v.SizeBytes))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&sizeFlag, "size", "", "new size: 512MiB, 10GiB, 1T or bytes (required)")
	return cmd
}

func newVolumeCloneCmd(cf *clientFlags) *cobra.Command {
	var limits qosFlags
	var repl int
	var nodes []string
	cmd := &cobra.Command{
		Use:   "clone VOL@SNAP NEWNAME [--repl N] [--nodes N1,N2]",
		Short: "Make a writable thin clone of a snapshot",
		Long: `Make a new volume from a snapshot, instantly whatever the size: the clone
shares the snapshot's data until either side writes. Prints the new name.
The clone gets the cluster's clone-default limits (strata cluster get) unless
--max-iops or --max-bandwidth (MiB/s) set its own; 0 or off is no limit.
A clone has one replica, on this node, unless --repl asks for more: they go on
nodes holding an in-sync replica of the source (it shares their layers there,
so the clone is instant on each), among --nodes when given.`,
		Example: `  strata snapshot create demo --name before
  strata volume clone demo@before demo-test
  strata volume clone db@nightly db-staging --repl 2
  strata volume clone demo@before demo-fast --max-iops off`,
		Args: exactArgs("VOL@SNAP", "NEWNAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := client.ParseSnapshotRef(args[0]); err != nil {
				return err
			}
			if err := errdefs.ValidateName("volume", args[1]); err != nil {
				return err
			}
			lim, err := limits.limits(cmd)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.CloneVolume(ctx, &stratav1.CloneVolumeRequest{Source: args[0], Name: args[1], Qos: lim, Replicas: int32(repl), Nodes: nodes})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), v.Name)
				return nil
			})
		},
	}
	limits.add(cmd, " (default: the cluster's clone default)")
	cmd.Flags().IntVar(&repl, "repl", 1, "number of replicas, on nodes holding the source's: 1 to 3")
	cmd.Flags().StringSliceVar(&nodes, "nodes", nil, "put the replicas only on these nodes")
	return cmd
}

func newVolumeRevertCmd(cf *clientFlags) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "revert NAME --to SNAP",
		Short: "Throw away every write made since a snapshot",
		Long: `Revert a volume to one of its snapshots: every write made since is dropped.
The snapshot stays. Refused while the volume is exported or mounted, and
while later snapshots exist (delete them first).`,
		Example: `  strata volume revert demo --to before`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			if to == "" {
				return fmt.Errorf("--to is required: the snapshot to revert to (see strata snapshot list %s): %w", name, errdefs.ErrInvalidArgument)
			}
			snap := to
			// Accept --to NAME@SNAP as well, for copy and paste from snapshot list.
			if strings.Contains(to, "@") {
				vol, s, err := client.ParseSnapshotRef(to)
				if err != nil {
					return err
				}
				if vol != name {
					return fmt.Errorf("--to %s is a snapshot of volume %s, not %s: %w", to, vol, name, errdefs.ErrInvalidArgument)
				}
				snap = s
			}
			if err := errdefs.ValidateName("snapshot", snap); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Volumes.RevertVolume(ctx, &stratav1.RevertVolumeRequest{Name: name, Snapshot: snap}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reverted volume %s to %s@%s\n", name, name, snap)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "snapshot of the volume to revert to (required)")
	return cmd
}

func newVolumeExportCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "export NAME",
		Short: "Print the NBD URI that serves a volume",
		Long: `Print the NBD URI of a volume. Any NBD client can use it: qemu, nbdcopy,
fio, nbd-client.`,
		Example: `  strata volume export demo
  qemu-img info "$(strata volume export demo)"`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.ExportVolume(ctx, &stratav1.ExportVolumeRequest{Name: args[0]})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), resp.Uri)
				return nil
			})
		},
	}
}

func newVolumeMountCmd(cf *clientFlags) *cobra.Command {
	var fsType string
	cmd := &cobra.Command{
		Use:   "mount NAME DIR [--fs ext4|xfs]",
		Short: "Mount a volume's filesystem at a directory",
		Long: `Mount a volume's filesystem at a directory of the node (usually needs root).
The filesystem is made on first use: ext4 unless --fs xfs. --fs is ignored
when the volume already has a filesystem.`,
		Example: `  sudo strata volume mount demo /mnt/demo
  sudo strata volume mount demo /mnt/demo --fs xfs`,
		Args: exactArgs("NAME", "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			switch fsType {
			case "", "ext4", "xfs":
			default:
				return fmt.Errorf("--fs %q is not supported: use ext4 or xfs: %w", fsType, errdefs.ErrInvalidArgument)
			}
			dir, err := filepath.Abs(args[1])
			if err != nil {
				return fmt.Errorf("mount directory %s: %w", args[1], err)
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.MountVolume(ctx, &stratav1.MountVolumeRequest{Name: args[0], Target: dir, FsType: fsType})
				if err != nil {
					return err
				}
				target := resp.Target
				if target == "" {
					target = dir
				}
				detail := dash(resp.FsType)
				if resp.Device != "" {
					detail += " on " + resp.Device
				}
				fmt.Fprintf(cmd.OutOrStdout(), "mounted volume %s at %s (%s)\n", args[0], target, detail)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&fsType, "fs", "", "filesystem to make on first use: ext4 or xfs (default ext4)")
	return cmd
}

func newVolumeUnmountCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "unmount DIR",
		Aliases: []string{"umount"},
		Short:   "Unmount a volume mounted with strata volume mount",
		Long:    `Unmount the volume mounted at a directory and release its device.`,
		Example: `  sudo strata volume unmount /mnt/demo`,
		Args:    exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return fmt.Errorf("mount directory %s: %w", args[0], err)
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.UnmountVolume(ctx, &stratav1.UnmountVolumeRequest{Target: dir})
				if err != nil {
					return err
				}
				if resp.Volume != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "unmounted volume %s from %s\n", resp.Volume, dir)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "unmounted %s\n", dir)
				}
				return nil
			})
		},
	}
}

// formatLabels shows labels as k=v pairs sorted by key.
func formatLabels(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}
