package secrets

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// NamespaceFile holds the namespace of the pod kevents runs in, written by Kubernetes beside the
// service account token.
const NamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// namespaceFile is NamespaceFile, a variable for the tests.
var namespaceFile = NamespaceFile

// cacheTTL is how long a Secret or ConfigMap read from the API is reused. It spares the API one
// read per trigger call (the http trigger resolves its Secrets on every call) while a rotated
// value is in use within seconds.
const cacheTTL = 10 * time.Second

// apiTimeout bounds one read from the API: Resolve takes no context.
const apiTimeout = 10 * time.Second

// kind is what the API is asked for.
type kind struct {
	name string // "Secret", as kubectl spells it
	gvr  schema.GroupVersionResource
}

var (
	secretKind    = kind{"Secret", schema.GroupVersionResource{Version: "v1", Resource: "secrets"}}
	configMapKind = kind{"ConfigMap", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}}
)

// Kube reads Secrets and ConfigMaps of one namespace from the Kubernetes API. It is safe for
// concurrent use, and shared by the copies of the Resolvers that hold it.
type Kube struct {
	namespace string
	client    dynamic.Interface
	ttl       time.Duration

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct{ kind, name string }

type cached struct {
	data    map[string]string // decoded; nil when the object does not exist
	expires time.Time
}

// NewKube reads Secrets and ConfigMaps through cfg in namespace: when empty, the pod's namespace
// (NamespaceFile), else "default". A nil cfg returns nil: no API to consult.
func NewKube(cfg *rest.Config, namespace string) (*Kube, error) {
	if cfg == nil {
		return nil, nil
	}
	if namespace == "" {
		namespace = DefaultNamespace()
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for Secrets in namespace %s: %w", namespace, err)
	}
	return &Kube{namespace: namespace, client: client, ttl: cacheTTL, cache: map[cacheKey]cached{}}, nil
}

// DefaultNamespace is the pod's namespace when kevents runs in a cluster, else "default".
func DefaultNamespace() string {
	if b, err := os.ReadFile(namespaceFile); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return "default"
}

// Namespace is where the Secrets and ConfigMaps are read.
func (k *Kube) Namespace() string { return k.namespace }

// lookup returns key of object name. missing says what is absent (the object, or the key in it)
// when the API answered that; err is any other failure (forbidden, unreachable), which must not
// pass for absence: that would hide an RBAC mistake behind "not found".
func (k *Kube) lookup(kind kind, name, key string) (value, missing string, err error) {
	data, err := k.object(kind, name)
	if err != nil {
		return "", "", err
	}
	if data == nil {
		return "", fmt.Sprintf("%s %s in namespace %s does not exist", kind.name, name, k.namespace), nil
	}
	v, ok := data[key]
	if !ok {
		return "", fmt.Sprintf("%s %s in namespace %s has no key %q", kind.name, name, k.namespace, key), nil
	}
	return v, "", nil
}

// object returns the decoded data of an object, from the cache when read less than ttl ago.
// Objects that do not exist are cached too, for as long: a missing Secret fails every call
// that needs it, and each would otherwise ask the API again.
func (k *Kube) object(kind kind, name string) (map[string]string, error) {
	ck := cacheKey{kind.name, name}
	now := time.Now()
	k.mu.Lock()
	c, ok := k.cache[ck]
	k.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.data, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	obj, err := k.client.Resource(kind.gvr).Namespace(k.namespace).Get(ctx, name, metav1.GetOptions{})
	var data map[string]string
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		// The API's messages name the object and the user, never the data.
		return nil, fmt.Errorf("get %s %s in namespace %s: %w", kind.name, name, k.namespace, err)
	default:
		if data, err = decode(kind, obj.Object); err != nil {
			return nil, fmt.Errorf("%s %s in namespace %s: %w", kind.name, name, k.namespace, err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// Expired entries go, so values of Secrets no longer asked for do not stay in memory.
	for key, e := range k.cache {
		if !now.Before(e.expires) {
			delete(k.cache, key)
		}
	}
	if k.ttl > 0 {
		k.cache[ck] = cached{data: data, expires: now.Add(k.ttl)}
	}
	return data, nil
}

// decode returns the data of a Secret (base64 in the API) or a ConfigMap (its data; binaryData
// is not read, as Argo does not), trailing newlines dropped as Resolve drops them from files. A
// non-nil map means the object exists, even with no keys.
func decode(kind kind, obj map[string]any) (map[string]string, error) {
	out := map[string]string{}
	m, _ := obj["data"].(map[string]any)
	for key, raw := range m {
		s, ok := raw.(string)
		if !ok {
			return nil, fmt.Errorf("data.%s: expected a string", key)
		}
		if kind == secretKind {
			// The decoder's errors give an offset, not the input.
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("data.%s: expected base64: %w", key, err)
			}
			s = string(b)
		}
		out[key] = strings.TrimRight(s, "\r\n")
	}
	return out, nil
}
