package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
)

func newUserCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("user", "Create, list, rotate and delete users (API tokens with a role)",
		`A user is a named API token with a role:
  admin      every call
  developer  the volumes of its tenant (clones of the templates granted to it):
             read, export, mount, map, snapshot, revert, resize, delete
  viewer     reads the metadata of everything, changes nothing, no data access
A developer needs --tenant; admins and viewers reach every tenant and take none.
The token is printed once, when the user is made or rotated: only its hash is
stored. Admins manage users; viewers may list them.`,
		`  strata user create alice --role developer --tenant team-a
  strata user list
  strata user rotate alice
  strata user delete alice`)
	cmd.Aliases = []string{"users"}
	cmd.AddCommand(newUserCreateCmd(cf), newUserListCmd(cf), newUserDeleteCmd(cf), newUserRotateCmd(cf), newUserWhoamiCmd(cf))
	return cmd
}

// printToken prints a new token alone on stdout, for scripts, and says on
// stderr that it is shown only this once.
func printToken(cmd *cobra.Command, u *stratav1.User, token, what string) {
	fmt.Fprintln(cmd.OutOrStdout(), token)
	fmt.Fprintf(cmd.ErrOrStderr(), "%s: the token above is shown only this once; give it to %s (STRATA_TOKEN or --token)\n", what, describeUser(u))
}

func describeUser(u *stratav1.User) string {
	s := u.Name + " (" + u.Role
	if u.Tenant != "" {
		s += " of tenant " + u.Tenant
	}
	return s + ")"
}

func newUserCreateCmd(cf *clientFlags) *cobra.Command {
	var role, tenant string
	cmd := &cobra.Command{
		Use:   "create NAME --role admin|developer|viewer [--tenant TENANT]",
		Short: "Create a user and print its token",
		Long: `Create a user with a role and print its API token on stdout. The token is
shown only this once (only its hash is stored): strata user rotate makes a new
one. A developer needs --tenant, the tenant whose clones it manages; admins and
viewers reach every tenant and take no --tenant. An existing name is refused.`,
		Example: `  strata user create alice --role developer --tenant team-a
  TOKEN=$(strata user create ci --role viewer)`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("user", args[0]); err != nil {
				return err
			}
			if role == "" {
				return fmt.Errorf("--role is required: admin, developer or viewer: %w", errdefs.ErrInvalidArgument)
			}
			if tenant != "" {
				if err := errdefs.ValidateName("tenant", tenant); err != nil {
					return err
				}
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Users.CreateUser(ctx, &stratav1.CreateUserRequest{Name: args[0], Role: role, Tenant: tenant})
				if err != nil {
					return err
				}
				printToken(cmd, resp.User, resp.Token, "created user "+resp.User.Name)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, developer or viewer")
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of a developer (a lower-case DNS label)")
	return cmd
}

func newUserListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List users: name, role, tenant, when made",
		Long: `List the users with their role, tenant, and when the user and its current
token were made. Tokens are never shown. The admin token that strata up makes
(DATA_DIR/admin.token) is not a user and is not listed.`,
		Example: `  strata user list
  strata user list -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Users.ListUsers(ctx, &stratav1.ListUsersRequest{})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "NAME\tROLE\tTENANT\tCREATED\tTOKEN-CREATED")
				for _, u := range resp.Users {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, dash(u.Tenant), formatTime(u.CreatedAt), formatTime(u.TokenCreatedAt))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newUserDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a user; its token stops working",
		Long: `Delete a user. Its token stops working at once on the node that serves the
call, and within 10 seconds on the other nodes. Volumes of a developer's
tenant stay: they belong to the tenant, not to the user.`,
		Example: `  strata user delete alice`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("user", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Users.DeleteUser(ctx, &stratav1.DeleteUserRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted user %s; its token no longer works\n", args[0])
				return nil
			})
		},
	}
}

func newUserRotateCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Give a user a new token and revoke the old one",
		Long: `Make a new token for a user, print it on stdout (only this once), and revoke
the old token, which stops working as after strata user delete. Use it when a
token leaked or was lost.`,
		Example: `  strata user rotate alice
  TOKEN=$(strata user rotate ci)`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("user", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Users.RotateUserToken(ctx, &stratav1.RotateUserTokenRequest{Name: args[0]})
				if err != nil {
					return err
				}
				printToken(cmd, resp.User, resp.Token, "rotated the token of "+resp.User.Name+"; the old one no longer works")
				return nil
			})
		},
	}
}

func newUserWhoamiCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the user, role and tenant of the token in use",
		Long: `Show who the API token in use (--token, STRATA_TOKEN or the client config)
belongs to: its user, role and tenant. Every role may ask.`,
		Example: `  strata user whoami
  STRATA_TOKEN=... strata user whoami`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				u, err := c.Users.WhoAmI(ctx, &stratav1.WhoAmIRequest{})
				if err != nil {
					return err
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintf(tw, "User:\t%s\n", u.Name)
				fmt.Fprintf(tw, "Role:\t%s\n", u.Role)
				fmt.Fprintf(tw, "Tenant:\t%s\n", dash(u.Tenant))
				return tw.Flush()
			})
		},
	}
}
