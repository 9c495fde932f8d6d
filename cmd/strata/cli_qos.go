package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
	"github.com/strata-storage/strata/internal/size"
)

// qosFlags are --max-iops and --max-bandwidth.
type qosFlags struct {
	iops, bandwidth string
}

const (
	flagMaxIOPS      = "max-iops"
	flagMaxBandwidth = "max-bandwidth"
)

func (f *qosFlags) add(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.iops, flagMaxIOPS, "", "IOPS limit"+what+": READ,WRITE or one value for both; 0 or off for none (e.g. 1000,500 or 500,off)")
	cmd.Flags().StringVar(&f.bandwidth, flagMaxBandwidth, "", "bandwidth limit in MiB/s"+what+": READ,WRITE or one value for both; 0 or off for none")
}

// limits returns the limits the flags give, nil when neither is given.
func (f *qosFlags) limits(cmd *cobra.Command) (*stratav1.QosLimits, error) {
	var out *stratav1.QosLimits
	if cmd.Flags().Changed(flagMaxIOPS) {
		p, err := qos.ParsePair(f.iops)
		if err != nil {
			return nil, fmt.Errorf("--%s %w", flagMaxIOPS, err)
		}
		out = &stratav1.QosLimits{MaxReadIops: &p.Read, MaxWriteIops: &p.Write}
	}
	if cmd.Flags().Changed(flagMaxBandwidth) {
		p, err := qos.ParsePair(f.bandwidth)
		if err != nil {
			return nil, fmt.Errorf("--%s %w", flagMaxBandwidth, err)
		}
		if out == nil {
			out = &stratav1.QosLimits{}
		}
		r, w := p.Read*qos.MiB, p.Write*qos.MiB
		out.MaxReadBytesPerSecond, out.MaxWriteBytesPerSecond = &r, &w
	}
	return out, nil
}

// formatLimitPair shows a read and a write limit: "-" when neither is set,
// one value when both are the same, "READ,WRITE" otherwise, "-" for an
// unset side ("500,-").
func formatLimitPair(read, write int64, format func(int64) string) string {
	one := func(v int64) string {
		if v == 0 {
			return "-"
		}
		return format(v)
	}
	if read == write {
		return one(read)
	}
	return one(read) + "," + one(write)
}

func formatIOPS(q *stratav1.QosLimits) string {
	return formatLimitPair(q.GetMaxReadIops(), q.GetMaxWriteIops(), func(v int64) string { return fmt.Sprint(v) })
}

func formatBandwidth(q *stratav1.QosLimits) string {
	return formatLimitPair(q.GetMaxReadBytesPerSecond(), q.GetMaxWriteBytesPerSecond(), func(v int64) string { return size.Format(v) + "/s" })
}

// describeLimits is the one-line form of a volume's limits.
func describeLimits(q *stratav1.QosLimits) string {
	return fmt.Sprintf("IOPS %s, bandwidth %s (read,write)", formatIOPS(q), formatBandwidth(q))
}

func newVolumeUpdateCmd(cf *clientFlags) *cobra.Command {
	var f qosFlags
	cmd := &cobra.Command{
		Use:   "update NAME [--max-iops R,W] [--max-bandwidth R,W]",
		Short: "Change a volume's QoS limits, online",
		Long: `Change a volume's IOPS and bandwidth limits. A running volume applies them at
once, with its NBD connections and mounts in place; the limits are recorded and
kept across restarts. A flag left out keeps its limit; 0 or off removes one.

Values are READ,WRITE, or one value for both: --max-iops 1000,500,
--max-iops 500, --max-iops 500,off. Bandwidth is in MiB/s. Reads and writes
count as one operation per started MiB; trim and write-zeroes as one write
operation and no bandwidth; flush is not limited.`,
		Example: `  strata volume update dev1 --max-iops 500
  strata volume update dev1 --max-iops 1000,500 --max-bandwidth 100
  strata volume update dev1 --max-iops off --max-bandwidth off`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			lim, err := f.limits(cmd)
			if err != nil {
				return err
			}
			if lim == nil {
				return fmt.Errorf("nothing to update: give --%s or --%s (0 or off removes a limit): %w", flagMaxIOPS, flagMaxBandwidth, errdefs.ErrInvalidArgument)
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.UpdateVolume(ctx, &stratav1.UpdateVolumeRequest{Name: name, Qos: lim})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "updated volume %s: %s\n", v.Name, describeLimits(v.Qos))
				return nil
			})
		},
	}
	f.add(cmd, "")
	return cmd
}

func newClusterCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("cluster", "Show and change cluster settings; print the join token",
		`Cluster settings apply to every node. The settings:
  clone-default-max-iops       IOPS limit of new clones whose request sets none
  clone-default-max-bandwidth  bandwidth limit of new clones, in MiB/s
Values are READ,WRITE or one value for both; 0 or off is no limit (the default).
strata cluster token prints the token new nodes join with (docs/cluster.md).`,
		`  strata cluster set clone-default-max-iops 500
  strata cluster get
  strata cluster token`)
	cmd.AddCommand(newClusterSetCmd(cf), newClusterGetCmd(cf), newClusterTokenCmd(cf))
	return cmd
}

func newClusterSetCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Set a cluster setting",
		Long: `Set a cluster setting. clone-default-max-iops and clone-default-max-bandwidth
(MiB/s) take READ,WRITE or one value for both; 0 or off removes the default.
New clones (volume clone, volume create --from) get the default for the limits
their request does not set; existing volumes keep theirs.`,
		Example: `  strata cluster set clone-default-max-iops 500
  strata cluster set clone-default-max-bandwidth 200,100
  strata cluster set clone-default-max-iops off`,
		Args: exactArgs("KEY", "VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.Cluster.SetSetting(ctx, &stratav1.SetSettingRequest{Key: args[0], Value: args[1]})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s = %s\n", st.Key, st.Value)
				return nil
			})
		},
	}
}

func newClusterGetCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get [KEY]",
		Short: "Show cluster settings",
		Long: `Show one cluster setting, or every one, with its value and what it does.
With KEY and the table format, only the value is printed (for scripts).`,
		Example: `  strata cluster get
  strata cluster get clone-default-max-iops
  strata cluster get -o json`,
		Args: maxArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Cluster.GetSettings(ctx, &stratav1.GetSettingsRequest{Keys: args})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				if len(args) == 1 && len(resp.Settings) == 1 {
					fmt.Fprintln(cmd.OutOrStdout(), resp.Settings[0].Value)
					return nil
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "KEY\tVALUE\tDESCRIPTION")
				for _, st := range resp.Settings {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", st.Key, st.Value, st.Description)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}
