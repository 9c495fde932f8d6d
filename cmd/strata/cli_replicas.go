package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

// formatReplicaCount is "in-sync/wanted": 3/3, 2/3 when degraded.
func formatReplicaCount(v *stratav1.Volume) string {
	if v.ReplicasWanted == 0 && len(v.Replicas) == 0 {
		return "-" // a server from before replication
	}
	in := 0
	for _, r := range v.Replicas {
		if r.Mode == "in-sync" {
			in++
		}
	}
	return fmt.Sprintf("%d/%d", in, max(v.ReplicasWanted, 1))
}

// formatReplicas is "n1 (in-sync), n2 (out)".
func formatReplicas(v *stratav1.Volume) string {
	parts := make([]string, 0, len(v.Replicas))
	for _, r := range v.Replicas {
		parts = append(parts, fmt.Sprintf("%s (%s)", r.Node, r.Mode))
	}
	return strings.Join(parts, ", ")
}

// nodeAPI returns the API address of node, from the cluster status.
func nodeAPI(ctx context.Context, c *client.Client, node string) (string, error) {
	st, err := c.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
	if err != nil {
		return "", err
	}
	for _, n := range st.Nodes {
		if n.Name == node {
			if n.ApiAddress == "" {
				return "", fmt.Errorf("node %s has no API address: %w", node, errdefs.ErrUnavailable)
			}
			return n.ApiAddress, nil
		}
	}
	return "", fmt.Errorf("node %s is not in the cluster (strata node list): %w", node, errdefs.ErrNotFound)
}

func newVolumeAttachCmd(cf *clientFlags) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "attach NAME [--node NODE]",
		Short: "Run a volume's engine on a node (failover)",
		Long: `Start the volume's engine on a node that holds one of its replicas: the node
of --api, or --node. NBD exports and mounts attach implicitly on their own node;
this command is for failover: when the node running a volume's engine dies,
attach the volume elsewhere. Every acknowledged write is there, and the volume's
epoch rises so that the old engine can no longer write to any replica. Prints
the volume's node and epoch.`,
		Example: `  strata volume attach db --node n2`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if node != "" {
					addr, err := nodeAPI(ctx, c, node)
					if err != nil {
						return err
					}
					cfg, err := client.Resolve(cf.api, cf.token)
					if err != nil {
						return err
					}
					nc, err := client.Dial(ctx, addr, cfg.Token)
					if err != nil {
						return err
					}
					defer nc.Close()
					c = nc
				}
				v, err := c.Volumes.AttachVolume(ctx, &stratav1.AttachVolumeRequest{Name: name, Node: node})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume %s attached to node %s (epoch %d, %s replicas in sync)\n", v.Name, v.Node, v.Epoch, formatReplicaCount(v))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node to run the engine on (default: the node of --api)")
	return cmd
}

func newVolumeHAUpdateCmd(cf *clientFlags) *cobra.Command {
	var repl int
	cmd := &cobra.Command{
		Use:   "ha-update NAME --repl N",
		Short: "Change a volume's number of replicas, online",
		Long: `Add or remove replicas while the volume is in use. New replicas are placed
like those of volume create (distinct nodes, spread across zones and racks) and
catch up in the background while writes continue: volume inspect shows them
catching-up, then in-sync. Removed replicas leave the in-sync set first, then
their data is deleted. Run it against the node the volume is attached to.`,
		Example: `  strata volume ha-update db --repl 3
  strata volume ha-update scratch --repl 1`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			if repl < 1 || repl > 3 {
				return fmt.Errorf("--repl %d: a volume has 1 to 3 replicas: %w", repl, errdefs.ErrInvalidArgument)
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.Volumes.UpdateVolumeReplicas(ctx, &stratav1.UpdateVolumeReplicasRequest{Name: name, Replicas: int32(repl)})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume %s: %s replicas in sync: %s\n", v.Name, formatReplicaCount(v), formatReplicas(v))
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&repl, "repl", 0, "number of replicas wanted: 1 to 3 (required)")
	cmd.MarkFlagRequired("repl")
	return cmd
}

func newVolumeCheckCmd(cf *clientFlags) *cobra.Command {
	var region string
	cmd := &cobra.Command{
		Use:   "check NAME [--region SIZE]",
		Short: "Compare the content of a volume's in-sync replicas",
		Long: `Compare the in-sync replicas of a volume region by region (SHA-256 of each
region on each node) at a quiet point of its write stream: writes wait while the
check runs. Exits 0 when the replicas are identical; otherwise prints the byte
ranges that differ and exits 1.`,
		Example: `  strata volume check db
  strata volume check db --region 64KiB`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("volume", name); err != nil {
				return err
			}
			var rb int64
			if region != "" {
				var err error
				if rb, err = size.Parse(region); err != nil {
					return err
				}
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Volumes.CheckVolume(ctx, &stratav1.CheckVolumeRequest{Name: name, RegionBytes: rb})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if len(resp.Differing) == 0 {
					fmt.Fprintf(out, "volume %s: replicas on %s are identical (%s compared)\n", name, strings.Join(resp.Nodes, ", "), size.Format(resp.ComparedBytes))
					return nil
				}
				fmt.Fprintf(out, "volume %s: replicas on %s differ in %d range(s):\n", name, strings.Join(resp.Nodes, ", "), len(resp.Differing))
				for _, e := range resp.Differing {
					fmt.Fprintf(out, "  offset %d length %d\n", e.Offset, e.Length)
				}
				return errReplicasDiffer
			})
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "size of the regions compared (default 1MiB)")
	return cmd
}

// errReplicasDiffer makes volume check exit 1 after printing the ranges.
var errReplicasDiffer = errors.New("replicas differ")
