package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
)

// newClusterTokenCmd is `strata cluster token`.
func newClusterTokenCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Print the token new nodes give to join the cluster (admins only)",
		Long: `Print the cluster's join token, alone on stdout, for a new node to join:
  strata up --ip ITS-IP --join API-ADDRESS --join-token TOKEN
The cluster's first node makes the token on its first start; it does not
change. Whoever has it can add nodes to the cluster: keep it as secret as an
admin token. The new node may also read it from $` + envJoinToken + `.`,
		Example: `  strata cluster token
  STRATA_JOIN_TOKEN=$(strata cluster token) strata up --ip 10.0.0.2 --join 10.0.0.1:7420`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				tok, err := c.Cluster.GetJoinToken(ctx, &stratav1.GetJoinTokenRequest{})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
				return nil
			})
		},
	}
}
