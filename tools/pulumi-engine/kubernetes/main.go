// Command pulumi-resource-kubernetes serves the upstream Kubernetes provider with its schema.
//
// Upstream's own main embeds schema-embed.json and terraform-mapping-embed.json, which its
// `go generate` step writes and which the published module does not contain. ../build.sh
// writes both files beside a copy of this package (see embedgen/) before building it.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
