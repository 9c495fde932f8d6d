package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

// maxSecretSize is the API's limit on a secret's value (server.MaxSecretSize).
const maxSecretSize = 64 << 10

func newSecretCmd(cf *clientFlags) *cobra.Command {
	cmd := groupCmd("secret", "Set, list and delete secrets (values are never shown)",
		`A secret is a named value that the server uses itself, such as the salt of
the masking engine's keyed hashes. Its value goes in once and never comes out:
no command and no API call returns it; list shows names and dates only.
Secrets are kept in etcd: protect etcd and its backups as you protect them.
Admins set and delete secrets; viewers may list them.`,
		`  strata secret set mask-salt --from-file salt.bin
  openssl rand -hex 32 | strata secret set mask-salt
  strata secret list`)
	cmd.Aliases = []string{"secrets"}
	cmd.AddCommand(newSecretSetCmd(cf), newSecretListCmd(cf), newSecretDeleteCmd(cf))
	return cmd
}

func newSecretSetCmd(cf *clientFlags) *cobra.Command {
	var fromFile string
	cmd := &cobra.Command{
		Use:   "set NAME [--from-file PATH]",
		Short: "Set a secret's value, read from stdin or a file",
		Long: `Make a secret or replace its value. The value is read from --from-file as is
(every byte), or else from stdin: piped, without one final newline (so that
echo works); typed at a terminal, one line that is not echoed. It is at most
64 KiB and never printed, logged or returned.`,
		Example: `  strata secret set mask-salt --from-file salt.bin
  openssl rand -hex 32 | strata secret set mask-salt
  strata secret set mask-salt            # type the value; it is not echoed`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := errdefs.ValidateName("secret", name); err != nil {
				return err
			}
			value, err := secretValue(cmd, name, fromFile)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Secrets.SetSecret(ctx, &stratav1.SetSecretRequest{Name: name, Value: value}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "set secret %s (%s)\n", name, size.Format(int64(len(value))))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file, every byte as is (default: stdin)")
	return cmd
}

// secretValue reads the value of secret name from the file, or from stdin.
func secretValue(cmd *cobra.Command, name, fromFile string) ([]byte, error) {
	var value []byte
	var err error
	from := "stdin"
	switch in := cmd.InOrStdin(); {
	case fromFile != "":
		from = fromFile
		value, err = readLimited(fromFile, maxSecretSize)
	case isTerminal(in):
		fmt.Fprintf(cmd.ErrOrStderr(), "value of secret %s (not echoed): ", name)
		value, err = readHidden(in.(*os.File))
		fmt.Fprintln(cmd.ErrOrStderr())
	default:
		value, err = io.ReadAll(io.LimitReader(in, maxSecretSize+2))
		value = trimNewline(value)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s: reading the value from %s: %w", name, from, err)
	}
	if len(value) == 0 {
		return nil, fmt.Errorf("secret %s: the value read from %s is empty: %w", name, from, errdefs.ErrInvalidArgument)
	}
	if len(value) > maxSecretSize {
		return nil, fmt.Errorf("secret %s: the value read from %s is larger than %s: %w", name, from, size.Format(maxSecretSize), errdefs.ErrInvalidArgument)
	}
	return value, nil
}

// readLimited reads a file, but no more than limit+1 bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readHidden reads one line from the terminal f with echo off, and puts
// the terminal back as it was, also when Ctrl-C ends the command.
func readHidden(f *os.File) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return nil, err
	}
	restore := func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
	defer restore()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sigs:
			restore()
			os.Exit(130)
		case <-done:
		}
	}()
	line, err := bufio.NewReader(io.LimitReader(f, maxSecretSize+2)).ReadBytes('\n')
	if err != nil && err != io.EOF {
		return nil, err
	}
	return trimNewline(line), nil
}

// trimNewline removes one final "\n" or "\r\n".
func trimNewline(b []byte) []byte {
	if b, ok := bytes.CutSuffix(b, []byte("\r\n")); ok {
		return b
	}
	return bytes.TrimSuffix(b, []byte("\n"))
}

func newSecretListCmd(cf *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List secrets: names and dates, never values",
		Long:    `List the secrets by name, with when each was made and last set. Values are never shown.`,
		Example: `  strata secret list
  strata secret list -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Secrets.ListSecrets(ctx, &stratav1.ListSecretsRequest{})
				if err != nil {
					return err
				}
				if format != formatTable {
					return printProto(cmd.OutOrStdout(), format, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "NAME\tCREATED\tUPDATED")
				for _, s := range resp.Secrets {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, formatTime(s.CreatedAt), formatTime(s.UpdatedAt))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &format)
	return cmd
}

func newSecretDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a secret",
		Long:    `Delete a secret. What uses it (the masking engine) fails until it is set again.`,
		Example: `  strata secret delete mask-salt`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := errdefs.ValidateName("secret", args[0]); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *client.Client) error {
				if _, err := c.Secrets.DeleteSecret(ctx, &stratav1.DeleteSecretRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted secret %s\n", args[0])
				return nil
			})
		},
	}
}
