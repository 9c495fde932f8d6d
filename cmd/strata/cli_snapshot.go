package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

func newSnapshotCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("snapshot", "Create, list and delete snapshots",
		`A snapshot is an instant, read-only point in a volume's history, named
VOL@NAME. Clone it (strata volume clone) or revert to it (strata volume revert).`,
		`  strata snapshot create demo --name before
  strata snapshot list demo
  strata snapshot delete demo@before`)
	cmd.Aliases = []string{"snapshots", "snap"}
	cmd.AddCommand(newSnapshotCreateCmd(cf), newSnapshotListCmd(cf), newSnapshotDeleteCmd(cf))
	return cmd
}

func newSnapshotCreateCmd(cf *clientFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "create VOL [--name NAME]",
		Short: "Snapshot a volume, instantly",
		Long: `Take a snapshot of a volume: instant, no data copied. Without --name the
snapshot is named snap-YYYYMMDD-HHMMSS. Prints VOL@NAME.`,
		Example: `  strata snapshot create demo --name before
  SNAP=$(strata snapshot create demo)`,
		Args: exactArgs("VOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			if name != "" {
				if err := errdefs.ValidateName("snapshot", name); err != nil {
					return err
				}
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				sn, err := c.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: args[0], Name: name})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", sn.Volume, sn.Name)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "snapshot name (default snap-YYYYMMDD-HHMMSS)")
	return cmd
}

func newSnapshotListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list [VOL]",
		Aliases: []string{"ls"},
		Short:   "List snapshots, of one volume or of all",
		Long: `List the snapshots of a volume, or of every volume, with the volume size
when each was taken and the number of clones made from it that still exist.`,
		Example: `  strata snapshot list
  strata snapshot list demo -o json`,
		Args: maxArgs("VOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var vol string
			if len(args) == 1 {
				vol = args[0]
				if err := errdefs.ValidateName("volume", vol); err != nil {
					return err
				}
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{Volume: vol})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "SNAPSHOT\tVOLUME\tSIZE\tCLONES\tCREATED")
				for _, s := range resp.Snapshots {
					fmt.Fprintf(tw, "%s@%s\t%s\t%s\t%d\t%s\n", s.Volume, s.Name, s.Volume,
						size.Format(s.SizeBytes), s.Clones, formatTime(s.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newSnapshotDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete VOL@NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a snapshot",
		Long: `Delete a snapshot; its space is reclaimed in the background. Data that
clones of the snapshot still use is kept until the last of them is deleted, and
the command says so.`,
		Example: `  strata snapshot delete demo@before`,
		Args:    exactArgs("VOL@NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			vol, name, err := client.ParseSnapshotRef(args[0])
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Snapshots.DeleteSnapshot(ctx, &stratav1.DeleteSnapshotRequest{Volume: vol, Name: name})
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("deleted snapshot %s@%s", vol, name)
				if resp.KeptForClones > 0 {
					msg += fmt.Sprintf("; snapshot data kept for %d clone(s) until they are deleted", resp.KeptForClones)
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			})
		},
	}
}
