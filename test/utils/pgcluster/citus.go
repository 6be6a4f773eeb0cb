package pgcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
)

// Citus is a throwaway Citus cluster on loopback: a coordinator and workers, each a Cluster of its own
// with the citus library preloaded, and one database (CitusDatabase) with the extension on every node
// and the workers registered with the coordinator.
//
// Authentication is what a real deployment has: the superuser logs in without a password (from
// loopback), every other role with its password (scram-sha-256). So the coordinator's own connections
// to the workers as a tenant role need that role's password, which is what pg_dist_authinfo gives them.
type Citus struct {
	Coordinator *Cluster
	Workers     []*Cluster
	dir         string
}

// CitusDatabase is the database the cluster is set up in.
const CitusDatabase = "tenantry"

// citusHBA admits the superuser without a password and everyone else with theirs. The coordinator's
// admits, besides the superuser, only the apps' logins (members of tenantry_apps): tenant roles log in
// to workers only, as the coordinator's own connections (docs/citus.md).
const citusHBA = `local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
`

const citusCoordinatorHBA = `local all all trust
host all postgres 127.0.0.1/32 trust
host all +tenantry_apps 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 reject
`

// CitusInstalled says whether the Citus extension is installed into the server binaries BinDir finds,
// and if not, what to do.
func CitusInstalled() error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	lib := filepath.Join(filepath.Dir(bin), "lib", "citus.so")
	if _, err := os.Stat(lib); err != nil {
		return fmt.Errorf("Citus is not installed (%s is missing): run `sudo make citus` (hack/citus.sh builds it from CITUS_TARBALL, else from the pinned download)", lib)
	}
	return nil
}

// StartCitus starts a coordinator and the given number of workers.
func StartCitus(ctx context.Context, workers int) (*Citus, error) {
	if err := CitusInstalled(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tenantry-citus-")
	if err != nil {
		return nil, err
	}
	c := &Citus{dir: dir}
	if c.Coordinator, err = c.node(ctx, "coordinator", citusCoordinatorHBA); err != nil {
		c.Close()
		return nil, err
	}
	conn, err := pgx.Connect(ctx, c.Coordinator.URL(CitusDatabase))
	if err != nil {
		c.Close()
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT citus_set_coordinator_host('127.0.0.1', $1)", c.Coordinator.Port); err != nil {
		c.Close()
		return nil, fmt.Errorf("setting the coordinator's host: %w", err)
	}
	for range workers {
		if _, err := c.AddWorker(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// AddWorker starts one more worker and adds it to the cluster. Existing distributed schemas stay where
// they are until a rebalance moves some.
func (c *Citus) AddWorker(ctx context.Context) (*Cluster, error) {
	w, err := c.node(ctx, fmt.Sprintf("worker%d", len(c.Workers)+1), citusHBA)
	if err != nil {
		return nil, err
	}
	c.Workers = append(c.Workers, w)
	conn, err := pgx.Connect(ctx, c.Coordinator.URL(CitusDatabase))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	// Citus copies the metadata of every distributed table to the new node. In one transaction (its
	// default) that runs the node out of lock slots at about a thousand tenant schemas; one command per
	// transaction is Citus's own answer, and a failed sync is taken up again by the maintenance daemon.
	if _, err := conn.Exec(ctx, "SET citus.metadata_sync_mode TO 'nontransactional'"); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT citus_add_node('127.0.0.1', $1)", w.Port); err != nil {
		return nil, fmt.Errorf("adding worker on port %d: %w", w.Port, err)
	}
	return w, nil
}

// node starts one node: initdb, citus preloaded, the database with the extension.
func (c *Citus) node(ctx context.Context, name, hba string) (*Cluster, error) {
	n, err := New(filepath.Join(c.dir, name), Options{HBA: hba, Settings: []string{
		"shared_preload_libraries=citus", "max_prepared_transactions=100",
		// A commit is acknowledged once its WAL is flushed, as on a real cluster: what Citus's shard
		// moves wait for before they switch a shard over.
		"synchronous_commit=on",
		// A rebalance moves up to four schemas at a time, into or out of one node too (Citus's
		// defaults are one): most of a small schema's move is waiting, not copying.
		"citus.max_background_task_executors=4", "citus.max_background_task_executors_per_node=4"}})
	if err != nil {
		return nil, err
	}
	if err := n.Start(); err != nil {
		return nil, fmt.Errorf("starting Citus %s: %w", name, err)
	}
	url, err := n.CreateDatabase(ctx, CitusDatabase)
	if err != nil {
		_ = n.Stop()
		return nil, err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		_ = n.Stop()
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE EXTENSION citus"); err != nil {
		_ = n.Stop()
		return nil, fmt.Errorf("creating the citus extension on %s: %w", name, err)
	}
	return n, nil
}

// URL is the superuser's connection string of the coordinator's database.
func (c *Citus) URL() string { return c.Coordinator.URL(CitusDatabase) }

// Close stops every node and removes the cluster's directory.
func (c *Citus) Close() {
	for _, n := range append([]*Cluster{c.Coordinator}, c.Workers...) {
		if n != nil {
			_ = n.Stop()
		}
	}
	_ = os.RemoveAll(c.dir)
}
