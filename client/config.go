package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Environment variables that override the config file (and are overridden by
// the --api and --token flags).
const (
	EnvAPI   = "STRATA_API"
	EnvToken = "STRATA_TOKEN"
)

// Config says where the Strata API is and how to authenticate to it. `strata up`
// writes it on first start; the CLI, CSI and the Docker plugin read it.
type Config struct {
	// API is the address of a node's API, host:port (e.g. 127.0.0.1:7420).
	API string `json:"api"`
	// Token is the bearer token sent with every call.
	Token string `json:"token"`
}

// DefaultConfigPath returns $XDG_CONFIG_HOME/strata/config.yaml, or
// ~/.config/strata/config.yaml when XDG_CONFIG_HOME is not set.
func DefaultConfigPath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "strata", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		// No home: a relative path is still a usable answer, and the error
		// message of LoadConfig shows it.
		return filepath.Join(".config", "strata", "config.yaml")
	}
	return filepath.Join(home, ".config", "strata", "config.yaml")
}

// ErrNoConfig is wrapped by LoadConfig when the config file does not exist.
var ErrNoConfig = errors.New("no client config")

// LoadConfig reads the config file at path. A missing file is an error that
// wraps ErrNoConfig (and os.ErrNotExist) and tells the user what to do.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, &noConfigError{path: path, err: err}
	}
	if err != nil {
		return cfg, fmt.Errorf("read client config: %w", err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("client config %s: %w", path, err)
	}
	cfg.API = strings.TrimSpace(cfg.API)
	cfg.Token = strings.TrimSpace(cfg.Token)
	return cfg, nil
}

type noConfigError struct {
	path string
	err  error
}

func (e *noConfigError) Error() string {
	return fmt.Sprintf("no client config at %s: run `strata up` on this machine, or pass --api and --token (or set %s and %s)", e.path, EnvAPI, EnvToken)
}

func (e *noConfigError) Unwrap() []error { return []error{ErrNoConfig, e.err} }

// SaveConfig writes cfg to path as YAML, crash-safely: the directory is made
// with mode 0700, the file is written to a temporary file with mode 0600,
// synced, renamed over path, and the directory is synced.
func SaveConfig(path string, cfg Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode client config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.tmp")
	if err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp already makes the file 0600; Chmod makes that explicit and
	// independent of the implementation.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		// Make the rename durable; a failure here loses nothing that the
		// rename has not already made visible, so it is not reported.
		d.Sync()
		d.Close()
	}
	return nil
}

// Resolve finds the API address and token, each on its own: the flag values
// when not empty, else the environment (STRATA_API, STRATA_TOKEN), else the
// config file at DefaultConfigPath. The file is read only when a flag and its
// variable are both empty, so --api and --token together need no file.
func Resolve(flagAPI, flagToken string) (Config, error) {
	return resolve(flagAPI, flagToken, DefaultConfigPath())
}

func resolve(flagAPI, flagToken, path string) (Config, error) {
	cfg := Config{API: strings.TrimSpace(flagAPI), Token: strings.TrimSpace(flagToken)}
	if cfg.API == "" {
		cfg.API = strings.TrimSpace(os.Getenv(EnvAPI))
	}
	if cfg.Token == "" {
		cfg.Token = strings.TrimSpace(os.Getenv(EnvToken))
	}
	if cfg.API != "" && cfg.Token != "" {
		return cfg, nil
	}
	file, err := LoadConfig(path)
	if err != nil {
		return Config{}, err
	}
	if cfg.API == "" {
		cfg.API = file.API
	}
	if cfg.Token == "" {
		cfg.Token = file.Token
	}
	if cfg.API == "" {
		return Config{}, fmt.Errorf("client config %s has no api address: pass --api or set %s", path, EnvAPI)
	}
	if cfg.Token == "" {
		return Config{}, fmt.Errorf("client config %s has no token: pass --token or set %s", path, EnvToken)
	}
	return cfg, nil
}
