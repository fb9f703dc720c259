//go:build tools

// Package tools pins natscli, the Go client's `nats bench`: the reference the runtime's
// benchmark measures itself against on the same server.
package tools

import _ "github.com/nats-io/natscli/nats"
