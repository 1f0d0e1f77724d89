//go:build tools

// Package tools pins versitygw, a maintained S3-compatible gateway that serves a local folder,
// so that e2e/build-tools.sh builds a reproducible binary for the tests that need a real bucket.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
