package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newUpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Start a Strata node",
		RunE:  func(*cobra.Command, []string) error { return errors.New("not implemented yet") },
	}
}
