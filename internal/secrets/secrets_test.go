package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const value = "hunter2-VALUE-do-not-print"

func writeSecret(t *testing.T, dir, name, key, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, key), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// env returns a LookupEnv over a fixed map, recording every name asked for.
func env(vars map[string]string, asked *[]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if asked != nil {
			*asked = append(*asked, k)
		}
		v, ok := vars[k]
		return v, ok
	}
}

func TestEnvName(t *testing.T) {
	for _, c := range []struct{ name, key, want string }{
		{"webhook-auth", "token", "KEVENTS_SECRET_WEBHOOK_AUTH__TOKEN"},
		{"my.secret", "api-key", "KEVENTS_SECRET_MY_SECRET__API_KEY"},
		{"S3", "Key_1", "KEVENTS_SECRET_S3__KEY_1"},
		{"a-b", "c", "KEVENTS_SECRET_A_B__C"},
		{"a", "b-c", "KEVENTS_SECRET_A__B_C"},
	} {
		if got := EnvName(c.name, c.key); got != c.want {
			t.Errorf("EnvName(%q, %q) = %q, want %q", c.name, c.key, got, c.want)
		}
	}
}

func TestResolveDir(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "auth", "token", value+"\n")
	writeSecret(t, dir, "auth", "crlf", value+"\r\n")
	writeSecret(t, dir, "auth", "bare", value)
	writeSecret(t, dir, "auth", "inner", "line1\nline2\n")
	writeSecret(t, dir, "auth", "spaces", " padded \n")
	// The file wins over the environment.
	r := Resolver{Dir: dir, LookupEnv: env(map[string]string{EnvName("auth", "token"): "from-env"}, nil)}
	for key, want := range map[string]string{
		"token":  value,
		"crlf":   value,
		"bare":   value,
		"inner":  "line1\nline2",
		"spaces": " padded ",
	} {
		got, err := r.Resolve("auth", key)
		if err != nil {
			t.Errorf("Resolve(auth, %s): %v", key, err)
			continue
		}
		if got != want {
			t.Errorf("Resolve(auth, %s) = %q, want %q", key, got, want)
		}
	}
}

func TestResolveEnvFallback(t *testing.T) {
	vars := map[string]string{EnvName("auth", "token"): value}

	// No Dir: the environment alone.
	got, err := Resolver{LookupEnv: env(vars, nil)}.Resolve("auth", "token")
	if err != nil || got != value {
		t.Errorf("env only: %q, %v; want %q", got, err, value)
	}

	// A Dir without the file: falls back to the environment.
	dir := t.TempDir()
	writeSecret(t, dir, "auth", "other", "x")
	got, err = Resolver{Dir: dir, LookupEnv: env(vars, nil)}.Resolve("auth", "token")
	if err != nil || got != value {
		t.Errorf("dir without the file: %q, %v; want %q", got, err, value)
	}

	// Environment values are taken as they are (no trimming).
	vars[EnvName("auth", "nl")] = "v\n"
	if got, _ := (Resolver{LookupEnv: env(vars, nil)}).Resolve("auth", "nl"); got != "v\n" {
		t.Errorf("env value %q, want it unchanged", got)
	}

	// A nil LookupEnv reads the process environment.
	t.Setenv(EnvName("proc", "key"), value)
	got, err = Resolver{}.Resolve("proc", "key")
	if err != nil || got != value {
		t.Errorf("os environment: %q, %v; want %q", got, err, value)
	}
}

func TestResolveNotFound(t *testing.T) {
	dir := t.TempDir()
	// Values that exist under other names must not leak into the error.
	writeSecret(t, dir, "auth", "other", value)
	var asked []string
	r := Resolver{Dir: dir, LookupEnv: env(map[string]string{EnvName("auth", "other"): value}, &asked)}
	got, err := r.Resolve("auth", "token")
	if err == nil {
		t.Fatalf("Resolve of a missing secret: %q, nil", got)
	}
	if got != "" {
		t.Errorf("value %q with an error", got)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("error %v does not wrap ErrNotFound", err)
	}
	msg := err.Error()
	if strings.Contains(msg, value) {
		t.Errorf("error %q contains a secret value", msg)
	}
	for _, want := range []string{"auth/token", EnvName("auth", "token"), filepath.Join(dir, "auth", "token")} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if len(asked) != 1 || asked[0] != EnvName("auth", "token") {
		t.Errorf("looked up %v in the environment, want only %s", asked, EnvName("auth", "token"))
	}

	// Without a Dir the error names only the environment variable.
	_, err = Resolver{LookupEnv: env(nil, nil)}.Resolve("auth", "token")
	if !errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), string(filepath.Separator)+"auth") {
		t.Errorf("no Dir: %v", err)
	}
}

// A secret file that exists but cannot be read is an error (not ErrNotFound, not a silent
// fallback to the environment), and the error carries no value.
func TestResolveUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	// A folder where the key's file should be: reading it fails with something other than
	// "does not exist", whoever runs the test.
	if err := os.MkdirAll(filepath.Join(dir, "auth", "token"), 0o700); err != nil {
		t.Fatal(err)
	}
	r := Resolver{Dir: dir, LookupEnv: env(map[string]string{EnvName("auth", "token"): value}, nil)}
	got, err := r.Resolve("auth", "token")
	if err == nil {
		t.Fatalf("Resolve: %q, nil; want a read error", got)
	}
	if errors.Is(err, ErrNotFound) {
		t.Errorf("error %v wraps ErrNotFound; the file exists", err)
	}
	if strings.Contains(err.Error(), value) || got != "" {
		t.Errorf("error %q / value %q leaks the secret", err, got)
	}
	if !strings.Contains(err.Error(), "auth/token") {
		t.Errorf("error %q does not name the secret", err)
	}
}

// Names and keys cannot climb out of Dir: Resolve reads <Dir>/<name>/<key> only.
func TestResolveStaysInDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "secrets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, root, "outside", "token", value) // <root>/outside/token
	if err := os.WriteFile(filepath.Join(root, "key"), []byte(value), 0o600); err != nil {
		t.Fatal(err) // <root>/key, next to Dir
	}
	r := Resolver{Dir: dir, LookupEnv: env(nil, nil)}
	var escaped []string
	for _, c := range [][2]string{{"../outside", "token"}, {"outside", "../../outside/token"}, {"..", "key"}} {
		got, err := r.Resolve(c[0], c[1])
		if err != nil && strings.Contains(err.Error(), value) {
			t.Errorf("Resolve(%q, %q): error %q leaks the value", c[0], c[1], err)
		}
		if got == value {
			escaped = append(escaped, c[0]+"/"+c[1])
		}
	}
	if len(escaped) > 0 {
		t.Errorf("Resolve read outside Dir for %v", escaped)
	}
}
