package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/size"
)

func newStatusCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: version, nodes, pools, volume and snapshot counts",
		Long: `Show the state of the cluster the API belongs to: server version, cluster
id, etcd endpoints, volume and snapshot counts, and for each node its state,
API and NBD addresses and pool capacity, available and allocated space.
Exits non-zero when the API cannot be reached, so scripts can wait on it.`,
		Example: `  strata status
  strata --api 10.0.0.5:7420 status`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				tw := newTable(w)
				fmt.Fprintf(tw, "Version:\t%s\n", dash(st.Version))
				fmt.Fprintf(tw, "Cluster:\t%s\n", dash(st.ClusterId))
				fmt.Fprintf(tw, "API:\t%s\n", c.API())
				if len(st.EtcdEndpoints) > 0 {
					fmt.Fprintf(tw, "Etcd:\t%s\n", strings.Join(st.EtcdEndpoints, ", "))
				}
				fmt.Fprintf(tw, "Volumes:\t%d\n", st.VolumeCount)
				fmt.Fprintf(tw, "Snapshots:\t%d\n", st.SnapshotCount)
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(w)
				tw = newTable(w)
				fmt.Fprintln(tw, "NODE\tSTATE\tAPI\tNBD\tCAPACITY\tAVAILABLE\tALLOCATED")
				for _, n := range st.Nodes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, dash(n.State),
						dash(n.ApiAddress), dash(n.NbdAddress), size.Format(n.PoolCapacityBytes),
						size.Format(n.PoolAvailableBytes), size.Format(n.PoolAllocatedBytes))
				}
				return tw.Flush()
			})
		},
	}
}
