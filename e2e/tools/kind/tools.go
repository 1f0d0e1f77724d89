//go:build tools

// Package tools pins kind (for users with Docker; not used on the CI machine) so that e2e/build-tools.sh builds a reproducible binary.
package tools

import _ "sigs.k8s.io/kind"
