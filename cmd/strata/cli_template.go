package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/mask"
	"github.com/strata-storage/strata/internal/size"
)

func newTemplateCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("template", "Make masked templates of production databases",
		`A template is a masked copy of a production volume's database, in versions,
that developers clone in an instant (strata clone create). Making a version
snapshots the source volume, makes a thin working clone, starts the database
server found in it (PostgreSQL or MySQL/MariaDB, with this node's server
binaries, on a private socket, never a network port), replaces the values of
the columns the rules file names with deterministic fakes, checks that none of
the original values sampled before masking is left, stops the server cleanly
and seals the result. The source volume is never written. A version that fails
any step is never published; the error says why and where the server's log is.
Developers see and clone the templates granted to their tenant (strata
template grant). See docs/devtest.md for the rules file.`,
		`  strata secret set prod-mask --from-file salt.bin
  strata template create crm --from crm-db --mask crm-mask.yaml --keep 3
  strata template grant crm --tenant team-a
  strata template refresh crm
  strata template list`)
	cmd.Aliases = []string{"templates", "tpl"}
	cmd.AddCommand(newTemplateCreateCmd(cf), newTemplateRefreshCmd(cf), newTemplateListCmd(cf),
		newTemplateInspectCmd(cf), newTemplateDeleteCmd(cf), newTemplateGrantCmd(cf), newTemplateRevokeCmd(cf))
	return cmd
}

// readRules reads and checks a rules file, so that mistakes show before
// anything is made.
func readRules(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--mask: %w", err)
	}
	if _, err := mask.Parse(b); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return string(b), nil
}

func newTemplateCreateCmd(cf *clientFlags) *cobra.Command {
	var from, rulesPath string
	var keep int32
	cmd := &cobra.Command{
		Use:   "create NAME --from VOL --mask RULES.yaml [--keep N]",
		Short: "Make a template and its version 1 from a volume's database",
		Long: `Make template NAME from volume VOL's database, masked by the rules file, and
publish it as version 1. The command waits for the masking, which takes from
seconds to minutes depending on the tables' size. The rules' salt_secret must
be set first (strata secret set). --keep N makes refreshes keep the last N
versions (versions that clones use stay until unused). If any step fails,
nothing is published and no template is left: the error names the step and
the server's log.`,
		Example: `  strata template create crm --from crm-db --mask crm-mask.yaml
  strata template create crm --from crm-db --mask crm-mask.yaml --keep 3`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("template", name); err != nil {
				return err
			}
			if from == "" || rulesPath == "" {
				return fmt.Errorf("--from VOL and --mask RULES.yaml are required: %w", errdefs.ErrInvalidArgument)
			}
			if err := errdefs.ValidateName("volume", from); err != nil {
				return err
			}
			rules, err := readRules(rulesPath)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				progress(cmd, "making version 1 of template %s from volume %s ...", name, from)
				t, err := c.Templates.CreateTemplate(ctx, &stratav1.CreateTemplateRequest{Name: name, Source: from, Rules: rules, Keep: keep})
				if err != nil {
					return err
				}
				printPublished(cmd.OutOrStdout(), t)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "volume holding the production database (required)")
	cmd.Flags().StringVar(&rulesPath, "mask", "", "rules file (YAML) saying how to mask each column (required)")
	cmd.Flags().Int32Var(&keep, "keep", 0, "versions refreshes keep (0: all)")
	return cmd
}

// progress tells someone at a terminal what the command waits for (errors
// stay one line for scripts).
func progress(cmd *cobra.Command, format string, args ...any) {
	if w, ok := cmd.ErrOrStderr().(io.Reader); ok && isTerminal(w) {
		fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...)
	}
}

// printPublished says which version was published, and what it holds.
func printPublished(w io.Writer, t *stratav1.Template) {
	if len(t.Versions) == 0 {
		return
	}
	v := t.Versions[len(t.Versions)-1]
	var rows int64
	for _, mt := range v.Tables {
		rows += mt.Rows
	}
	fmt.Fprintf(w, "published template %s version %d (%s@%s): %d tables, %d rows masked by %s; %d sampled original values found nowhere after; %.1fs\n",
		t.Name, v.Number, v.Volume, v.Snapshot, len(v.Tables), rows, v.Server, v.SampledValues, v.BuildSeconds)
}

func newTemplateRefreshCmd(cf *clientFlags) *cobra.Command {
	var rulesPath string
	var keep int32
	cmd := &cobra.Command{
		Use:   "refresh NAME [--mask RULES.yaml] [--keep N]",
		Short: "Make the next version of a template from its source's current data",
		Long: `Make the next version of template NAME from its source volume's current data,
masked by the template's rules (or by --mask, which then become the template's
rules), and publish it. Then the versions beyond --keep (or the template's
keep) are dropped, except those clones use. A failed refresh publishes nothing
and leaves the earlier versions as they were.`,
		Example: `  strata template refresh crm
  strata template refresh crm --mask crm-mask-v2.yaml --keep 2`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("template", name); err != nil {
				return err
			}
			req := &stratav1.RefreshTemplateRequest{Name: name}
			if rulesPath != "" {
				rules, err := readRules(rulesPath)
				if err != nil {
					return err
				}
				req.Rules = rules
			}
			if cmd.Flags().Changed("keep") {
				req.Keep = &keep
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				progress(cmd, "making the next version of template %s ...", name)
				t, err := c.Templates.RefreshTemplate(ctx, req)
				if err != nil {
					return err
				}
				printPublished(cmd.OutOrStdout(), t)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&rulesPath, "mask", "", "new rules file (YAML) for this version and the next")
	cmd.Flags().Int32Var(&keep, "keep", 0, "versions to keep from now on (0: all)")
	return cmd
}

func newTemplateListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List templates",
		Long: `List the templates you may see (a developer: those granted to its tenant),
with their source volume, latest version, the versions kept, their clones, and
why the last attempt at a version failed, if it did.`,
		Example: `  strata template list
  strata template list -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Templates.ListTemplates(ctx, &stratav1.ListTemplatesRequest{})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "TEMPLATE\tSOURCE\tLATEST\tVERSIONS\tKEEP\tCLONES\tUPDATED\tLAST ERROR")
				for _, t := range resp.Templates {
					latest, updated, clones := "-", "-", 0
					var nums []string
					for _, v := range t.Versions {
						nums = append(nums, strconv.Itoa(int(v.Number)))
						clones += int(v.Clones)
						latest, updated = strconv.Itoa(int(v.Number)), formatTime(v.CreatedAt)
					}
					if t.Building != 0 {
						nums = append(nums, fmt.Sprintf("(%d building)", t.Building))
					}
					keep := "all"
					if t.Keep > 0 {
						keep = strconv.Itoa(int(t.Keep))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", t.Name, t.Source, latest, dash(strings.Join(nums, ",")),
						keep, clones, updated, dash(truncate(t.LastError, 60)))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func newTemplateInspectCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a template, its grants, its versions and its rules",
		Long: `Show a template: its source, the tenants it is granted to (a developer sees
only its own), its versions (the volume and snapshot each is kept in, the
tables masked and their rows, the values sampled, the server that masked them,
how long it took, the clones using it, the build log), the last failure and its
log, and the rules file.`,
		Example: `  strata template inspect crm
  strata template inspect crm -o yaml`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if err := errdefs.ValidateName("template", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.Templates.GetTemplate(ctx, &stratav1.GetTemplateRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, t)
				}
				w := cmd.OutOrStdout()
				tw := newTable(w)
				keep := "all"
				if t.Keep > 0 {
					keep = strconv.Itoa(int(t.Keep))
				}
				building := "-"
				if t.Building != 0 {
					building = fmt.Sprintf("version %d", t.Building)
				}
				for _, kv := range [][2]string{
					{"Name", t.Name}, {"Source", t.Source}, {"Keep", keep}, {"Created", formatTime(t.CreatedAt)},
					{"Granted to", dash(grantTenants(t))},
					{"Building", building}, {"Last attempt", formatTime(t.LastAttemptAt)},
					{"Last error", dash(t.LastError)}, {"Last log", dash(t.LastLog)},
				} {
					fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
				tw.Flush()
				fmt.Fprintln(w)
				tw = newTable(w)
				fmt.Fprintln(tw, "VERSION\tSNAPSHOT\tSIZE\tTABLES\tSAMPLED\tSERVER\tBUILD\tCLONES\tCREATED")
				for _, v := range t.Versions {
					var tables []string
					for _, mt := range v.Tables {
						tables = append(tables, fmt.Sprintf("%s (%d rows)", mt.Name, mt.Rows))
					}
					fmt.Fprintf(tw, "%d\t%s@%s\t%s\t%s\t%d\t%s\t%.1fs\t%d\t%s\n", v.Number, v.Volume, v.Snapshot, size.Format(v.SizeBytes),
						dash(strings.Join(tables, ", ")), v.SampledValues, dash(v.Server), v.BuildSeconds, v.Clones, formatTime(v.CreatedAt))
				}
				tw.Flush()
				fmt.Fprintf(w, "\nRules:\n%s", t.Rules)
				if !strings.HasSuffix(t.Rules, "\n") {
					fmt.Fprintln(w)
				}
				return nil
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newTemplateDeleteCmd(cf *clientFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME [--force]",
		Aliases: []string{"rm"},
		Short:   "Delete a template and its versions",
		Long: `Delete a template, its versions, their build logs and its grants. Refused while
clones of it exist; with --force it goes anyway and the clones keep working
(their data is shared with the versions and stays until they are deleted), but
they can no longer be reset.`,
		Example: `  strata template delete crm
  strata template delete crm --force`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("template", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Templates.DeleteTemplate(ctx, &stratav1.DeleteTemplateRequest{Name: args[0], Force: force})
				if err != nil {
					return err
				}
				msg := "deleted template " + args[0]
				if len(resp.OrphanedClones) > 0 {
					msg += fmt.Sprintf("; %d clone(s) keep their data but can no longer be reset: %s", len(resp.OrphanedClones), strings.Join(resp.OrphanedClones, ", "))
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even while clones of the template exist")
	return cmd
}

// grantTenants lists the tenants a template is granted to: "team-a, team-b".
func grantTenants(t *stratav1.Template) string {
	var names []string
	for _, g := range t.Grants {
		names = append(names, g.Tenant)
	}
	return strings.Join(names, ", ")
}

func newTemplateGrantCmd(cf *clientFlags) *cobra.Command {
	return grantCmd(cf, &cobra.Command{
		Use:   "grant NAME --tenant TENANT",
		Short: "Let a tenant's developers see and clone a template",
		Long: `Grant template NAME to TENANT: its developers see the template (template list,
inspect) and make clones of any of its versions (strata clone create), which
belong to their tenant. Granting again changes nothing. A tenant is only a
name: it may be granted before any user of it exists (strata user create
--tenant). Admins only.`,
		Example: `  strata template grant crm --tenant team-a`,
	}, "tenant to grant the template to (required)", func(ctx context.Context, c *client.Client, name, tenant string) (string, error) {
		t, err := c.Templates.GrantTemplate(ctx, &stratav1.GrantTemplateRequest{Name: name, Tenant: tenant})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("granted template %s to tenant %s (granted to: %s)", name, tenant, grantTenants(t)), nil
	})
}

func newTemplateRevokeCmd(cf *clientFlags) *cobra.Command {
	return grantCmd(cf, &cobra.Command{
		Use:   "revoke NAME --tenant TENANT",
		Short: "Take back a tenant's grant of a template",
		Long: `Revoke the grant of template NAME to TENANT: its developers no longer see the
template, make clones of it or reset their clones of it. Their clones are not
deleted: they keep working, and stay the tenant's until they expire or are
deleted (strata clone delete). Revoking a grant that does not exist fails and
lists the template's grants. Admins only.`,
		Example: `  strata template revoke crm --tenant team-a`,
	}, "tenant whose grant to revoke (required)", func(ctx context.Context, c *client.Client, name, tenant string) (string, error) {
		t, err := c.Templates.RevokeTemplate(ctx, &stratav1.RevokeTemplateRequest{Name: name, Tenant: tenant})
		if err != nil {
			return "", err
		}
		msg := fmt.Sprintf("revoked the grant of template %s to tenant %s (granted to: %s)", name, tenant, dash(grantTenants(t)))
		// The clones the tenant keeps; the revoke is done whether or not
		// they can be listed.
		if resp, err := c.Clones.ListClones(ctx, &stratav1.ListClonesRequest{Template: name}); err == nil {
			var kept []string
			for _, cl := range resp.Clones {
				if cl.Tenant == tenant {
					kept = append(kept, cl.Name)
				}
			}
			if len(kept) > 0 {
				msg += fmt.Sprintf("; the tenant's %d clone(s) of it stay until they expire or are deleted: %s", len(kept), strings.Join(kept, ", "))
			}
		}
		return msg, nil
	})
}

// grantCmd completes grant or revoke: NAME and --tenant TENANT, checked
// before any call, then do's call, whose message is printed.
func grantCmd(cf *clientFlags, cmd *cobra.Command, tenantUsage string, do func(ctx context.Context, c *client.Client, name, tenant string) (string, error)) *cobra.Command {
	var tenant string
	cmd.Args = exactArgs("NAME")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		if err := errdefs.ValidateName("template", name); err != nil {
			return err
		}
		if tenant == "" {
			return fmt.Errorf("--tenant is required: %w", errdefs.ErrInvalidArgument)
		}
		if err := errdefs.ValidateName("tenant", tenant); err != nil {
			return err
		}
		return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
			msg, err := do(ctx, c, name, tenant)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		})
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", tenantUsage)
	return cmd
}
