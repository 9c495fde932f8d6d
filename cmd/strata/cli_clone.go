package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

func newCloneCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("clone", "Make, list, reset and delete self-service clones of templates",
		`A clone is your own writable copy of a masked template version, made in an
instant whatever the database's size, owned by your tenant. It is an ordinary
volume (mount it, export it, use it from Docker or Kubernetes) that expires: the
node deletes it once its TTL runs out, or once it has had no I/O for its idle
expiry, unless it is protected. A clone still in use when it expires is deleted
as soon as it is released. strata clone list shows the time left.`,
		`  strata clone create alice-crm --template crm --ttl 8h --idle-expiry 2h
  strata clone list
  strata clone reset alice-crm
  strata clone extend alice-crm --ttl 8h
  strata clone delete alice-crm`)
	cmd.Aliases = []string{"clones"}
	cmd.AddCommand(newCloneCreateCmd(cf), newCloneListCmd(cf), newCloneInspectCmd(cf), newCloneResetCmd(cf),
		newCloneExtendCmd(cf), newCloneDeleteCmd(cf))
	return cmd
}

// parseDuration reads a TTL: Go durations (90m, 8h, 1h30m) and days (3d);
// "0" or "none" for no limit.
func parseDuration(flag, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" || s == "none" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err == nil && n > 0 {
			return int64(n * 24 * 3600), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%s %q: want a duration such as 90m, 8h or 3d (0 or none for no limit): %w", flag, s, errdefs.ErrInvalidArgument)
	}
	return int64(d / time.Second), nil
}

func newCloneCreateCmd(cf *clientFlags) *cobra.Command {
	var tmpl, ttl, idle, tenant string
	var version int32
	var protect bool
	cmd := &cobra.Command{
		Use:   "create NAME --template T [--version N] [--ttl 8h] [--idle-expiry 2h] [--protect]",
		Short: "Make a clone of a template version, instantly",
		Long: `Make clone NAME, a thin clone of the template's latest version (or --version N),
owned by your tenant (an admin's clone belongs to --tenant, or to no tenant),
with the cluster's clone-default QoS limits. --ttl deletes it that long from
now, --idle-expiry once it has had no read or write for that long; --protect
keeps it from both. Durations: 90m, 8h, 3d. Prints the name; mount it with
strata volume mount NAME DIR, or use it as a Docker or Kubernetes volume.`,
		Example: `  strata clone create alice-crm --template crm --ttl 8h --idle-expiry 2h
  strata clone create ci-123 --template crm --version 4 --ttl 30m
  strata clone create demo --template crm --protect --tenant team-a`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("clone", args[0]); err != nil {
				return err
			}
			if tmpl == "" {
				return fmt.Errorf("--template is required: %w", errdefs.ErrInvalidArgument)
			}
			ttlSec, err := parseDuration("--ttl", ttl)
			if err != nil {
				return err
			}
			idleSec, err := parseDuration("--idle-expiry", idle)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				cl, err := c.Clones.CreateClone(ctx, &stratav1.CreateCloneRequest{Name: args[0], Template: tmpl, Version: version,
					TtlSeconds: ttlSec, IdleExpirySeconds: idleSec, Protected: protect, Tenant: tenant})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), cl.Name)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&tmpl, "template", "", "template to clone (required)")
	f.Int32Var(&version, "version", 0, "template version (default: the latest)")
	f.StringVar(&ttl, "ttl", "", "delete the clone this long from now, e.g. 8h or 3d (default: never)")
	f.StringVar(&idle, "idle-expiry", "", "delete the clone once it has had no I/O for this long, e.g. 2h (default: never)")
	f.BoolVar(&protect, "protect", false, "never delete the clone on expiry")
	f.StringVar(&tenant, "tenant", "", "tenant that owns the clone (admins; a developer's clones belong to its tenant)")
	return cmd
}

// left describes the time until t: "7h59m", "expired", "-" when unset.
func left(t interface{ AsTime() time.Time }, set bool, now time.Time) string {
	if !set {
		return "-"
	}
	d := t.AsTime().Sub(now)
	if d <= 0 {
		return "expired"
	}
	d = d.Round(time.Minute)
	if d < time.Minute {
		return "<1m"
	}
	h, m := int(d.Hours()), int(d.Minutes())%60
	switch {
	case h >= 48:
		return fmt.Sprintf("%dd%dh", h/24, h%24)
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}

// cloneState says whether the clone is due for deletion, and why it
// stays if it is.
func cloneState(c *stratav1.Clone) string {
	if c.Protected {
		return "protected"
	}
	if c.Expired == "" {
		return "active"
	}
	s := "expired (" + c.Expired + ")"
	if v := c.Volume; v != nil && (len(v.Mounts) > 0 || len(v.Devices) > 0 || v.ExportConnections > 0) {
		s += ", deleted once released"
	}
	return s
}

func newCloneListCmd(cf *clientFlags) *cobra.Command {
	var format, tmpl string
	cmd := &cobra.Command{
		Use:     "list [--template T]",
		Aliases: []string{"ls"},
		Short:   "List clones, with the time they have left",
		Long: `List the clones you may see (a developer: its tenant's), with their template
version, tenant, the time left before their TTL and idle expiry run out, and
whether they are in use (mounted, exported or mapped).`,
		Example: `  strata clone list
  strata clone list --template crm -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Clones.ListClones(ctx, &stratav1.ListClonesRequest{Template: tmpl})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				now := time.Now()
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "CLONE\tTEMPLATE\tTENANT\tTTL LEFT\tIDLE LEFT\tSTATE\tSIZE\tALLOCATED\tMOUNTS")
				for _, cl := range resp.Clones {
					var mounts string
					var sz, alloc int64
					if v := cl.Volume; v != nil {
						mounts, sz, alloc = strings.Join(v.Mounts, ","), v.SizeBytes, v.AllocatedBytes
					}
					fmt.Fprintf(tw, "%s\t%s@%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cl.Name, cl.Template, cl.Version, dash(cl.Tenant),
						left(cl.ExpiresAt, cl.ExpiresAt != nil, now), left(cl.IdleExpiresAt, cl.IdleExpiresAt != nil, now),
						cloneState(cl), size.Format(sz), size.Format(alloc), dash(mounts))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&tmpl, "template", "", "only the clones of this template")
	addOutputFlag(cmd, &format)
	return cmd
}

func newCloneInspectCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "inspect NAME",
		Short:   "Show a clone",
		Example: `  strata clone inspect alice-crm`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if err := errdefs.ValidateName("clone", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				cl, err := c.Clones.GetClone(ctx, &stratav1.GetCloneRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, cl)
				}
				now := time.Now()
				idle := "-"
				if cl.IdleExpirySeconds > 0 {
					idle = (time.Duration(cl.IdleExpirySeconds) * time.Second).String()
				}
				tw := newTable(cmd.OutOrStdout())
				rows := [][2]string{
					{"Name", cl.Name}, {"Template", fmt.Sprintf("%s version %d", cl.Template, cl.Version)},
					{"Tenant", dash(cl.Tenant)}, {"Owner", dash(cl.Owner)}, {"Created", formatTime(cl.CreatedAt)},
					{"Expires", formatTime(cl.ExpiresAt) + " (" + left(cl.ExpiresAt, cl.ExpiresAt != nil, now) + " left)"},
					{"Idle expiry", idle}, {"Last active", formatTime(cl.ActiveAt)},
					{"Idle expires", formatTime(cl.IdleExpiresAt) + " (" + left(cl.IdleExpiresAt, cl.IdleExpiresAt != nil, now) + " left)"},
					{"State", cloneState(cl)},
				}
				if v := cl.Volume; v != nil {
					rows = append(rows, [][2]string{{"Size", size.Format(v.SizeBytes)}, {"Allocated", size.Format(v.AllocatedBytes)},
						{"Parent", dash(v.Parent)}, {"Mounts", dash(strings.Join(v.Mounts, ", "))}, {"Exports", strconv.Itoa(int(v.ExportConnections))},
						{"Max IOPS", formatIOPS(v.Qos)}, {"Max bandwidth", formatBandwidth(v.Qos)}}...)
				}
				for _, kv := range rows {
					fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newCloneResetCmd(cf *clientFlags) *cobra.Command {
	var version int32
	var latest bool
	cmd := &cobra.Command{
		Use:   "reset NAME [--version N | --latest]",
		Short: "Put a clone back to its template version",
		Long: `Put clone NAME back to its template version as published, keeping its name,
tenant, QoS limits and expiry: every write and every snapshot made since are
dropped. --latest moves it to the template's latest version, --version N to
another. Refused while the clone is mounted, exported or mapped.`,
		Example: `  strata clone reset alice-crm
  strata clone reset alice-crm --latest`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("clone", args[0]); err != nil {
				return err
			}
			if latest && version != 0 {
				return fmt.Errorf("--latest and --version are exclusive: %w", errdefs.ErrInvalidArgument)
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				cl, err := c.Clones.ResetClone(ctx, &stratav1.ResetCloneRequest{Name: args[0], Version: version, Latest: latest})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reset clone %s to template %s version %d\n", cl.Name, cl.Template, cl.Version)
				return nil
			})
		},
	}
	cmd.Flags().Int32Var(&version, "version", 0, "reset to this template version (default: the clone's)")
	cmd.Flags().BoolVar(&latest, "latest", false, "reset to the template's latest version")
	return cmd
}

func newCloneExtendCmd(cf *clientFlags) *cobra.Command {
	var ttl, idle string
	var protect, unprotect bool
	cmd := &cobra.Command{
		Use:   "extend NAME --ttl 8h [--idle-expiry 2h] [--protect | --unprotect]",
		Short: "Give a clone more time",
		Long: `Set clone NAME's TTL anew, from now (--ttl 0 removes it), and optionally its
idle expiry and its protection. The idle clock starts again too.`,
		Example: `  strata clone extend alice-crm --ttl 8h
  strata clone extend alice-crm --ttl 3d --idle-expiry 0
  strata clone extend demo --ttl 0 --protect`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("clone", args[0]); err != nil {
				return err
			}
			if !cmd.Flags().Changed("ttl") {
				return fmt.Errorf("--ttl is required (0 removes the TTL): %w", errdefs.ErrInvalidArgument)
			}
			if protect && unprotect {
				return fmt.Errorf("--protect and --unprotect are exclusive: %w", errdefs.ErrInvalidArgument)
			}
			ttlSec, err := parseDuration("--ttl", ttl)
			if err != nil {
				return err
			}
			req := &stratav1.ExtendCloneRequest{Name: args[0], TtlSeconds: ttlSec}
			if cmd.Flags().Changed("idle-expiry") {
				idleSec, err := parseDuration("--idle-expiry", idle)
				if err != nil {
					return err
				}
				req.IdleExpirySeconds = &idleSec
			}
			if protect || unprotect {
				req.Protected = &protect
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				cl, err := c.Clones.ExtendClone(ctx, req)
				if err != nil {
					return err
				}
				msg := "clone " + cl.Name + ": no TTL"
				if cl.ExpiresAt != nil {
					msg = fmt.Sprintf("clone %s expires at %s", cl.Name, formatTime(cl.ExpiresAt))
				}
				if cl.Protected {
					msg += " (protected: never deleted on expiry)"
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&ttl, "ttl", "", "new TTL from now, e.g. 8h or 3d; 0 for none (required)")
	cmd.Flags().StringVar(&idle, "idle-expiry", "", "new idle expiry, e.g. 2h; 0 for none")
	cmd.Flags().BoolVar(&protect, "protect", false, "never delete the clone on expiry")
	cmd.Flags().BoolVar(&unprotect, "unprotect", false, "let the clone expire again")
	return cmd
}

func newCloneDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a clone",
		Long:    `Delete clone NAME and its data. Refused while it is mounted, exported or mapped.`,
		Example: `  strata clone delete alice-crm`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("clone", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Clones.DeleteClone(ctx, &stratav1.DeleteCloneRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "deleted clone "+args[0])
				return nil
			})
		},
	}
}
