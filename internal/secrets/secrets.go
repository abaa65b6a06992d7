// Package secrets resolves Argo's Kubernetes Secret references (name, key) outside a cluster:
// from a folder laid out like a mounted Secret volume, or from the environment. Values are
// returned to the caller only; they never appear in errors.
package secrets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned when no file and no environment variable holds the secret.
var ErrNotFound = errors.New("secret not found")

// Resolver finds secret values.
type Resolver struct {
	// Dir holds one folder per Secret and one file per key: <Dir>/<name>/<key>, the layout of
	// a Secret mounted as a volume. Empty means files are not consulted.
	Dir string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// EnvName is the environment variable that holds key of Secret name:
// KEVENTS_SECRET_<NAME>__<KEY>, upper-cased, with every other character than A-Z and 0-9 as _.
// The double underscore keeps (a-b, c) and (a, b-c) apart: Secret names cannot contain _.
func EnvName(name, key string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z':
				return r - 'a' + 'A'
			case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
				return r
			}
			return '_'
		}, s)
	}
	return "KEVENTS_SECRET_" + clean(name) + "__" + clean(key)
}

// Resolve returns the value of key in Secret name. A trailing newline in a file is dropped, as
// editors add one. The error names the secret and where it looked, never the value.
func (r Resolver) Resolve(name, key string) (string, error) {
	if err := checkPart("name", name); err != nil {
		return "", err
	}
	if err := checkPart("key", key); err != nil {
		return "", err
	}
	if r.Dir != "" {
		p := filepath.Join(r.Dir, name, key)
		b, err := os.ReadFile(p)
		if err == nil {
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("secret %s/%s: read %s: %w", name, key, p, err)
		}
	}
	lookup := r.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, ok := lookup(EnvName(name, key)); ok {
		return v, nil
	}
	where := "environment variable " + EnvName(name, key)
	if r.Dir != "" {
		where = filepath.Join(r.Dir, name, key) + " or " + where
	}
	return "", fmt.Errorf("%w: %s/%s (looked in %s)", ErrNotFound, name, key, where)
}

// checkPart keeps a Secret name or key inside Dir: Kubernetes allows only letters, digits, '-',
// '_' and '.' in them, and never "." or "..".
func checkPart(what, s string) error {
	ok := s != "" && s != "." && s != ".."
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("secret %s %q: expected letters, digits, '-', '_' and '.', not . or ..", what, s)
	}
	return nil
}
