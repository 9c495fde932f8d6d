package main

import "github.com/spf13/cobra"

// addClientCommands adds the API client commands (status, volume, snapshot).
func addClientCommands(root *cobra.Command) {}
