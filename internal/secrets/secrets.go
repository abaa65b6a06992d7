// Package secrets resolves Argo's Kubernetes Secret references (name, key): from a folder laid
// out like a mounted Secret volume, from the environment, and, when kevents runs in or is pointed
// at a cluster, from the Kubernetes API. It resolves ConfigMap keys too, for the few Argo fields
// that take a configMapKeyRef. Values are returned to the caller only; they never appear in
// errors.
//
// A Secret is looked for in that order: the file, the environment variable, the API. The first
// two are what an operator sets on purpose for this process (a volume mount, an env entry), so
// they override what the namespace holds; the API is the fallback that makes Argo definitions
// work unchanged in a cluster, where Argo reads Secrets from the API too.
package secrets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned when no place looked in holds the value: no file, no environment
// variable, and no such Secret, ConfigMap or key in the Kubernetes API when that is configured.
var ErrNotFound = errors.New("not found")

// Resolver finds secret values. It is cheap to copy: the Kubernetes client is behind a pointer.
type Resolver struct {
	// Dir holds one folder per Secret and one file per key: <Dir>/<name>/<key>, the layout of
	// a Secret mounted as a volume. Empty means files are not consulted.
	Dir string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Kube reads Secrets and ConfigMaps of one namespace from the Kubernetes API, after Dir and
	// the environment; nil means the API is not consulted. Build it with NewKube.
	Kube *Kube
}

// EnvName is the environment variable that holds key of Secret name:
// KEVENTS_SECRET_<NAME>__<KEY>, upper-cased, with every other character than A-Z and 0-9 as _.
// The double underscore keeps (a-b, c) and (a, b-c) apart: Secret names cannot contain _.
func EnvName(name, key string) string { return envName("KEVENTS_SECRET_", name, key) }

// ConfigMapEnvName is the environment variable that holds key of ConfigMap name, spelt as
// EnvName spells a Secret's: KEVENTS_CONFIGMAP_<NAME>__<KEY>.
func ConfigMapEnvName(name, key string) string { return envName("KEVENTS_CONFIGMAP_", name, key) }

func envName(prefix, name, key string) string {
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
	return prefix + clean(name) + "__" + clean(key)
}

// Resolve returns the value of key in Secret name, from <Dir>/<name>/<key>, else the
// environment variable EnvName(name, key), else the Secret in the Kubernetes API. A trailing
// newline in a file or an API value is dropped, as editors add one and a mounted Secret and the
// same Secret read from the API must give one value. The error names the secret and every place
// it looked, never the value; it wraps ErrNotFound only when none of them holds the key.
func (r Resolver) Resolve(name, key string) (string, error) {
	if err := checkNameKey("secret", name, key); err != nil {
		return "", err
	}
	var looked []string
	if r.Dir != "" {
		p := filepath.Join(r.Dir, name, key)
		b, err := os.ReadFile(p)
		if err == nil {
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("secret %s/%s: read %s: %w", name, key, p, err)
		}
		looked = append(looked, p)
	}
	return r.fromEnvOrAPI(secretKind, name, key, EnvName(name, key), looked)
}

// ResolveConfigMap returns the value of key in ConfigMap name, from the environment variable
// ConfigMapEnvName(name, key), else the ConfigMap in the Kubernetes API. Dir is not read: a
// folder there would be taken for a Secret of the same name. Errors are as Resolve's.
func (r Resolver) ResolveConfigMap(name, key string) (string, error) {
	if err := checkNameKey("configmap", name, key); err != nil {
		return "", err
	}
	return r.fromEnvOrAPI(configMapKind, name, key, ConfigMapEnvName(name, key), nil)
}

// fromEnvOrAPI finishes a lookup that places in looked did not answer: the environment variable
// env, then the Kubernetes API.
func (r Resolver) fromEnvOrAPI(kind kind, name, key, env string, looked []string) (string, error) {
	what := strings.ToLower(kind.name) // "secret", as errors name references
	lookup := r.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, ok := lookup(env); ok {
		return v, nil
	}
	looked = append(looked, "environment variable "+env)
	if r.Kube == nil {
		var why string
		if kind == configMapKind {
			// ConfigMaps live in the API; say why it was not asked.
			why = "; no Kubernetes API configured: run in a cluster, or pass --kubeconfig or set KUBECONFIG"
		}
		return "", fmt.Errorf("%s %s/%s %w (looked in %s%s)", what, name, key, ErrNotFound, strings.Join(looked, ", "), why)
	}
	v, missing, err := r.Kube.lookup(kind, name, key)
	if err != nil {
		return "", fmt.Errorf("%s %s/%s: not in %s, and the Kubernetes API failed: %w", what, name, key, strings.Join(looked, " or "), err)
	}
	if missing != "" {
		return "", fmt.Errorf("%s %s/%s %w (looked in %s and the Kubernetes API: %s)", what, name, key, ErrNotFound, strings.Join(looked, ", "), missing)
	}
	return v, nil
}

// checkNameKey keeps a Secret or ConfigMap name and key inside Dir and the API path: Kubernetes
// allows only letters, digits, '-', '_' and '.' in them, and never "." or "..". what is "secret"
// or "configmap".
func checkNameKey(what, name, key string) error {
	for _, p := range [2][2]string{{"name", name}, {"key", key}} {
		s := p[1]
		ok := s != "" && s != "." && s != ".."
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("%s %s %q: expected letters, digits, '-', '_' and '.', not . or ..", what, p[0], s)
		}
	}
	return nil
}
