package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
)

// clientFlags are the global flags that say which API to talk to.
type clientFlags struct {
	api   string
	token string
}

// addClientCommands adds the API client commands (status, volume, snapshot,
// cluster)
// and the global --api and --token flags they use.
func addClientCommands(root *cobra.Command) {
	cf := &clientFlags{}
	pf := root.PersistentFlags()
	pf.StringVar(&cf.api, "api", "", "`host:port` of the Strata API (default $"+client.EnvAPI+", then the client config that strata up writes)")
	pf.StringVar(&cf.token, "token", "", "API `token` (default $"+client.EnvToken+", then the client config that strata up writes)")
	root.AddCommand(newStatusCmd(cf), newVolumeCmd(cf), newSnapshotCmd(cf), newClusterCmd(cf), newNodeCmd(cf))
	root.AddCommand(newUserCmd(cf), newSecretCmd(cf))
	root.AddCommand(newTemplateCmd(cf), newCloneCmd(cf))
}

// call resolves the API address and token, connects, and runs fn with a
// context that Ctrl-C or SIGTERM cancels.
func (cf *clientFlags) call(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	cfg, err := client.Resolve(cf.api, cf.token)
	if err != nil {
		return err
	}
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.Dial(ctx, cfg.API, cfg.Token)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// groupCmd makes a command that only holds subcommands: alone it prints its
// help, with an unknown subcommand it fails (cobra would print help and
// succeed, hiding a typo in a script).
func groupCmd(use, short, long, example string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if cmd.SuggestionsMinimumDistance <= 0 {
				cmd.SuggestionsMinimumDistance = 2
			}
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return fmt.Errorf("%s; the commands are: %s", msg, strings.Join(names, ", "))
		},
	}
}

// exactArgs requires one argument for each name, and says which are expected
// when the count is wrong.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		want := strings.Join(names, " ")
		if len(names) == 0 {
			want = "no arguments"
		}
		return argsError(cmd, want, len(args))
	}
}

// maxArgs allows up to len(names) arguments.
func maxArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) <= len(names) {
			return nil
		}
		return argsError(cmd, "at most "+strings.Join(names, " "), len(args))
	}
}

func argsError(cmd *cobra.Command, want string, got int) error {
	plural := "s"
	if got == 1 {
		plural = ""
	}
	return fmt.Errorf("%s expects %s, got %d argument%s (usage: %s; see --help)",
		cmd.CommandPath(), want, got, plural, cmd.UseLine())
}

// Output formats of list and inspect.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func addOutputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", formatTable, "output format: table, json or yaml")
}

func checkFormat(f string) error {
	switch f {
	case formatTable, formatJSON, formatYAML:
		return nil
	}
	return fmt.Errorf("unknown output format %q: use table, json or yaml: %w", f, errdefs.ErrInvalidArgument)
}

// marshalOpts are grpc-gateway's defaults, so that `-o json` prints what the
// REST API returns: lowerCamelCase field names, every field present.
var marshalOpts = protojson.MarshalOptions{EmitUnpopulated: true}

// printProto writes m as indented JSON or as YAML.
func printProto(w io.Writer, format string, m proto.Message) error {
	raw, err := marshalOpts.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its whitespace on purpose; normalise it.
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	out := append(buf.Bytes(), '\n')
	if format == formatYAML {
		if out, err = yaml.JSONToYAML(raw); err != nil {
			return err
		}
	}
	_, err = w.Write(out)
	return err
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// dash shows empty values as "-" so that table columns stay aligned and
// parseable.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil || (ts.Seconds == 0 && ts.Nanos == 0) {
		return "-"
	}
	return ts.AsTime().In(time.Local).Format("2006-01-02 15:04:05")
}
