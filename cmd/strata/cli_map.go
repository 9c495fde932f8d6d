package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
)

func newVolumeMapCmd(cf *clientFlags) *cobra.Command {
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "map NAME [--read-only]",
		Short: "Make a volume a raw block device of its node",
		Long: `Make the volume a block device of the node it lives on (/dev/nbdN with the
kernel's NBD client, else a loop device over its FUSE file: strata up --attach),
with no filesystem made or mounted, and print the device.
Use it for raw block access: a database on a raw device, dd, mkfs of your own.
Mapping a mapped volume prints its device again. A mounted volume cannot be
mapped, and a mapped one can be neither mounted, deleted nor reverted: unmap
it first. Needs a node started as root. The device works while the node runs.`,
		Example: `  sudo strata volume map demo          # prints e.g. /dev/loop3
  sudo strata volume unmap demo`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.MapVolume(ctx, &stratav1.MapVolumeRequest{Name: args[0], ReadOnly: readOnly})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), resp.Device)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "map the device read-only")
	return cmd
}

func newVolumeUnmapCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unmap NAME",
		Short: "Release the block device of a volume mapped with strata volume map",
		Long: `Release the volume's block device: what was written to it is flushed to the
volume first. Refused while a process or a filesystem has the device open.`,
		Example: `  sudo strata volume unmap demo`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("volume", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Volumes.UnmapVolume(ctx, &stratav1.UnmapVolumeRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "unmapped volume %s\n", args[0])
				return nil
			})
		},
	}
}
