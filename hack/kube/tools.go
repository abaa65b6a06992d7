//go:build tools

// Package kube pins the Kubernetes commands the tests build; see the Makefile's kube target.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
