// Command bench measures Tenantry on a real API server (envtest) and a real PostgreSQL cluster, with
// the operator running as its own process, and prints markdown for docs/benchmarks.md.
//
//	go run ./hack/bench onboard 100 1000   (make bench-onboard)
//	go run ./hack/bench app 1000           (make bench-app)
//	go run ./hack/bench fleet 1000         (make bench-fleet)
//	go run ./hack/bench restart 10000      (make bench-restart)
//	go run ./hack/bench apiserver 300      (make bench-apiserver)
//	go run ./hack/bench shards 1000        (make bench-shards)
//	go run ./hack/bench citus 1000         (make bench-citus)
//	go run ./hack/bench lifecycle 1000000  (make bench-lifecycle; n is expenses, not tenants)
//
// onboard: the apply→Ready latency of tenants applied one at a time; then, per size N, N tenants applied
// at once: time until all are Ready, per-tenant apply→Ready, operator CPU and peak RSS; and beside it, on
// the same PostgreSQL, the floor: psql running the same DDL (role, schema, every migration) for N schemas.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench onboard|app|fleet|restart|drift|apiserver|shards|citus|lifecycle N [N...]")
		os.Exit(2)
	}
	var sizes []int
	for _, a := range os.Args[2:] {
		n, err := strconv.Atoi(a)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: %q is not a number of tenants\n", a)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	ctrllog.SetLogger(logr.Discard()) // the informers' logs are not the benchmark's
	ctx := context.Background()
	var err error
	switch os.Args[1] {
	case "onboard":
		err = onboard(ctx, sizes)
	case "fleet":
		for _, n := range sizes {
			if err = fleet(ctx, n); err != nil {
				break
			}
		}
	case "drift":
		for _, n := range sizes {
			if err = drift(ctx, n); err != nil {
				break
			}
		}
	case "restart":
		for _, n := range sizes {
			if err = restart(ctx, n); err != nil {
				break
			}
		}
	case "apiserver":
		for _, n := range sizes {
			if err = apiserverFloor(ctx, n); err != nil {
				break
			}
		}
	case "citus":
		for _, n := range sizes {
			if err = citusBench(ctx, n); err != nil {
				break
			}
		}
	case "shards":
		for _, n := range sizes {
			if err = shardsBench(ctx, n); err != nil {
				break
			}
		}
	case "app":
		for _, n := range sizes {
			if err = appBench(ctx, n); err != nil {
				break
			}
		}
	case "lifecycle":
		for _, n := range sizes {
			if err = lifecycle(ctx, n); err != nil {
				break
			}
		}
	default:
		err = fmt.Errorf("unknown benchmark %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
