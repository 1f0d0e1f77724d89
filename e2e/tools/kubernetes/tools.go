//go:build tools

// Package tools pins the Kubernetes commands that the cluster tests run: the control plane,
// kubectl, and the kubelet and kube-proxy of the real worker node (`local-cluster.sh up --node`).
// The blank imports keep them in go.mod/go.sum; e2e/build-tools.sh builds them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
