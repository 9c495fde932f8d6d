package client

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "strata", "config.yaml")
	want := Config{API: "127.0.0.1:7420", Token: "s3cret"}
	if err := SaveConfig(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(path)
	if err != nil || got != want {
		t.Fatalf("LoadConfig = %+v, %v; want %+v", got, err, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("config file mode %o, want 600", perm)
	}
	dst, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if perm := dst.Mode().Perm(); perm != 0o700 {
		t.Errorf("config dir mode %o, want 700", perm)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "api: 127.0.0.1:7420") || !strings.Contains(string(b), "token: s3cret") {
		t.Errorf("config file is not the expected YAML:\n%s", b)
	}

	// Overwrite: the new content replaces the old, and no temp file stays.
	want2 := Config{API: "10.0.0.1:7420", Token: "other"}
	if err := SaveConfig(path, want2); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadConfig(path); err != nil || got != want2 {
		t.Fatalf("after overwrite LoadConfig = %+v, %v; want %+v", got, err, want2)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("config dir holds %d entries, want only config.yaml: %v", len(ents), ents)
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, ErrNoConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v does not wrap ErrNoConfig and os.ErrNotExist", err)
	}
	for _, want := range []string{"strata up", "--api", "--token"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadConfigBad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("api: [unclosed"), 0o600)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfig of bad YAML: %v", err)
	}
}

func TestDefaultConfigPath(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/x/y")
	if got := DefaultConfigPath(); got != "/x/y/strata/config.yaml" {
		t.Errorf("with XDG_CONFIG_HOME: %q", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got := DefaultConfigPath(); got != "/home/u/.config/strata/config.yaml" {
		t.Errorf("without XDG_CONFIG_HOME: %q", got)
	}
}

func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := SaveConfig(path, Config{API: "file:1", Token: "filetok"}); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct {
		name                             string
		flagAPI, flagTok, envAPI, envTok string
		path                             string
		want                             Config
		wantErr                          string
	}{
		{name: "file only", path: path, want: Config{"file:1", "filetok"}},
		{name: "env over file", envAPI: "env:1", envTok: "envtok", path: path, want: Config{"env:1", "envtok"}},
		{name: "flags over env", flagAPI: "flag:1", flagTok: "flagtok", envAPI: "env:1", envTok: "envtok", path: path, want: Config{"flag:1", "flagtok"}},
		{name: "per field", flagAPI: "flag:1", envTok: "envtok", path: path, want: Config{"flag:1", "envtok"}},
		{name: "api flag, token from file", flagAPI: "flag:1", path: path, want: Config{"flag:1", "filetok"}},
		{name: "no file needed", flagAPI: "flag:1", flagTok: "flagtok", path: missing, want: Config{"flag:1", "flagtok"}},
		{name: "env only, no file", envAPI: "env:1", envTok: "envtok", path: missing, want: Config{"env:1", "envtok"}},
		{name: "api flag, no file", flagAPI: "flag:1", path: missing, wantErr: "strata up"},
		{name: "nothing", path: missing, wantErr: "strata up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvAPI, tc.envAPI)
			t.Setenv(EnvToken, tc.envTok)
			got, err := resolve(tc.flagAPI, tc.flagTok, tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("resolve = %+v, %v; want error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("resolve = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestResolveEmptyFileFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("api: 127.0.0.1:7420\n"), 0o600)
	t.Setenv(EnvAPI, "")
	t.Setenv(EnvToken, "")
	if _, err := resolve("", "", path); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("config without token: %v", err)
	}
}
