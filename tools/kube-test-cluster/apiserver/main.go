// Command kube-apiserver: the Kubernetes API server of k8s.io/kubernetes v1.36.3, built from
// Go modules for the tests (tools/kube-test-cluster/build.sh).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
