package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/size"
)

func newNodeCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("node", "Show the nodes of the cluster",
		`The nodes of the cluster: each runs strata up, holds a pool, and runs an
embedded etcd member (the first three nodes) or is an etcd client.`,
		`  strata node list`)
	cmd.Aliases = []string{"nodes"}
	cmd.AddCommand(newNodeListCmd(cf))
	return cmd
}

func newNodeListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the nodes of the cluster",
		Long: `List every node of the cluster with its state, labels, API and replica
addresses, whether it runs an embedded etcd member, and its pool's capacity,
allocated and available space. A node is online while it keeps its etcd
lease alive; it shows offline once the lease expires (10 seconds after it
stopped, or after it lost etcd). -o json and -o yaml print the API's fields
({"nodes": [...]}).`,
		Example: `  strata node list
  strata node list -o json | jq -r '.nodes[] | select(.state == "online") | .name'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
				if err != nil {
					return err
				}
				return printNodes(cmd.OutOrStdout(), format, st.Nodes)
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

// printNodes prints nodes as a table, or as {"nodes": [...]} in JSON or
// YAML with the API's field names, as the list commands print their
// responses.
func printNodes(w io.Writer, format string, nodes []*stratav1.Node) error {
	if format != formatTable {
		list := make([]json.RawMessage, 0, len(nodes))
		for _, n := range nodes {
			raw, err := marshalOpts.Marshal(n)
			if err != nil {
				return err
			}
			list = append(list, raw)
		}
		raw, err := json.Marshal(map[string]any{"nodes": list})
		if err != nil {
			return err
		}
		out := raw
		if format == formatYAML {
			if out, err = yaml.JSONToYAML(raw); err != nil {
				return err
			}
		} else {
			var buf bytes.Buffer
			if err := json.Indent(&buf, raw, "", "  "); err != nil {
				return err
			}
			out = append(buf.Bytes(), '\n')
		}
		_, err = w.Write(out)
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tSTATE\tLABELS\tAPI\tREPLICA\tETCD\tCAPACITY\tALLOCATED\tAVAILABLE")
	for _, n := range nodes {
		etcd := "client"
		if n.EtcdMember {
			etcd = "member"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, dash(n.State), dash(formatLabels(n.Labels)),
			dash(n.ApiAddress), dash(n.ReplicaAddress), etcd, size.Format(n.PoolCapacityBytes),
			size.Format(n.PoolAllocatedBytes), size.Format(n.PoolAvailableBytes))
	}
	return tw.Flush()
}
