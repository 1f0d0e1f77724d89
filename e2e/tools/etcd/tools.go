//go:build tools

// Package tools pins etcd (the API server's storage) so that e2e/build-tools.sh builds a reproducible binary.
package tools

import _ "go.etcd.io/etcd/server/v3"
