//go:build tools

// Package tools pins the Kubernetes control-plane commands that the cluster tests run.
// The blank imports keep them in go.mod/go.sum; e2e/build-tools.sh builds them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
