//go:build tools

// Package tools pins kwok (simulated nodes and pods) so that e2e/build-tools.sh builds a reproducible binary.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
