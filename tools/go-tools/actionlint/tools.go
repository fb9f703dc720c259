//go:build tools

// Package tools pins the Go command-line tools that natstopo's tests run; build.sh builds
// each named package of this module's requirements.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
