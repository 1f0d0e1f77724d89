//go:build tools

// Package tools pins helm (chart install tests) so that e2e/build-tools.sh builds a reproducible binary.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
