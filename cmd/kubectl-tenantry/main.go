// Command kubectl-tenantry is the kubectl plugin of Tenantry: `kubectl tenantry status`, `tenant`,
// `drift`, `migrate status`, `suspend`, `resume`, `reset-admin`, `move` and `psql`. Install it on the
// PATH (or with krew: dist/krew/tenantry.yaml) and kubectl finds it. docs/kubectl-plugin.md lists every
// command.
package main

import (
	"os"

	"tenantry.dev/tenantry/internal/plugin"
)

func main() {
	os.Exit(plugin.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
