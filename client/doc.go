// Package client is the Go client of the Strata API, used by the CLI, the CSI
// driver, the Docker plugin and tests.
//
// Config, LoadConfig, SaveConfig and Resolve find the API address and token
// (flags, then STRATA_API/STRATA_TOKEN, then the file `strata up` writes).
// Dial connects and returns a Client whose Volumes, Snapshots and Cluster
// fields are the generated gRPC clients; every error they return is already
// translated: its message is the server's, errors.Is matches the errdefs
// sentinel of its code, and status.Code still reports the gRPC code.
package client
