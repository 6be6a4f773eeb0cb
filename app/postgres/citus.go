package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantry.dev/tenantry/internal/registry"
)

// On a Citus coordinator each tenant schema lives whole on one worker. Sent to the coordinator, a
// tenant's transaction is forwarded on a connection the coordinator opens to that worker as the tenant's
// role, and keeps none of (docs/citus.md): one new, authenticated connection per transaction. Sent to
// the worker that holds the schema, the same transaction runs there locally, as the same role, on a
// pooled connection. So with registry.CitusRouteWorkers the app keeps a pool per worker and a map of which worker
// holds which schema, read from Citus's metadata every citusRefresh; the coordinator still holds the
// registry, and still serves a tenant whose worker is unknown or unreachable.
//
// A rebalance moves schemas between workers. Until the next refresh, a moved tenant's transaction may
// land on its old worker, which forwards it to the new one as the tenant's role. Those forwards may be
// refused (a worker has no password for tenant roles: only the coordinator's pg_dist_authinfo does), in
// which case the transaction failed before anything ran; it is tried once more on the coordinator, and
// the tenant is served by the coordinator until the refresh.

// citusRefresh is how often the app reads which worker holds which schema.
const citusRefresh = 2 * time.Second

// citusNodeRetry is how long a worker that refused a connection is left out before it is tried again.
const citusNodeRetry = 10 * time.Second

// citusRouter holds the worker pools and the placements of the tenant schemas.
type citusRouter struct {
	base string // the home connection string, whose host and port a worker's replace
	opts Options

	mu      sync.RWMutex
	pools   map[string][]*pgxpool.Pool // by node, "host:port"
	schemas map[string]string          // schema → node
	down    map[string]time.Time       // node → when to try it again
}

// ErrNotCitus is RunCitus's answer when the home database is not a Citus coordinator.
var ErrNotCitus = errors.New("the database is not a Citus coordinator")

// RunCitus routes tenants to the Citus workers that hold their schemas while ctx lasts, refreshing the
// placements every couple of seconds. It returns ErrNotCitus at once when the home database has no
// Citus, and nothing changes then.
func (db *DB) RunCitus(ctx context.Context, log *slog.Logger) error {
	home := db.databases[""][0]
	var citus bool
	for {
		err := home.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`).Scan(&citus)
		if err == nil {
			break
		}
		log.Warn("cannot tell whether the database is Citus yet", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(citusRefresh):
		}
	}
	if !citus {
		return ErrNotCitus
	}
	r := &citusRouter{base: db.url, opts: db.opts, pools: map[string][]*pgxpool.Pool{}, down: map[string]time.Time{}}
	db.citusMu.Lock()
	db.citus = r
	db.citusMu.Unlock()
	log.Info("routing tenants to the Citus workers that hold their schemas")
	defer func() {
		db.citusMu.Lock()
		db.citus = nil
		db.citusMu.Unlock()
		r.close()
	}()
	tick := time.NewTicker(citusRefresh)
	defer tick.Stop()
	for {
		if err := r.refresh(ctx, home); err != nil && ctx.Err() == nil {
			log.Warn("cannot read which Citus worker holds which tenant; the last placements read stand", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// refresh reads every distributed schema's worker and opens a pool for each worker not seen before.
func (r *citusRouter) refresh(ctx context.Context, home *pgxpool.Pool) error {
	rows, _ := home.Query(ctx, `SELECT DISTINCT ON (ns.nspname) ns.nspname::text, n.nodename, n.nodeport `+
		registry.CitusSchemaPlacements+`
ORDER BY ns.nspname`)
	schemas := map[string]string{}
	addrs := map[string]workerAddr{}
	var schema, host string
	var port int32
	if _, err := pgx.ForEachRow(rows, []any{&schema, &host, &port}, func() error {
		node := net.JoinHostPort(host, strconv.Itoa(int(port)))
		schemas[schema] = node
		addrs[node] = workerAddr{host, uint16(port)}
		return nil
	}); err != nil {
		return err
	}
	r.mu.RLock()
	for node := range r.pools {
		delete(addrs, node)
	}
	r.mu.RUnlock()
	opened := map[string][]*pgxpool.Pool{}
	// Workers are dialled directly, never through PgBouncer: no pool shard aliases there.
	direct := r.opts
	direct.PoolDatabases = false
	for node, addr := range addrs {
		pools, err := openPools(workerURL(r.base, addr), direct)
		if err != nil {
			return fmt.Errorf("worker %s: %w", node, err)
		}
		opened[node] = pools
	}
	r.mu.Lock()
	for node, pools := range opened {
		r.pools[node] = pools
	}
	r.schemas = schemas
	r.mu.Unlock()
	return nil
}

// workerAddr is where a worker listens, as pg_dist_node says.
type workerAddr struct {
	host string
	port uint16
}

// workerURL is the app's connection string with a worker's host and port in place of the
// coordinator's: the same login, database and TLS settings, and a server name to verify that is the
// worker's.
func workerURL(base string, w workerAddr) string {
	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Host = net.JoinHostPort(w.host, strconv.Itoa(int(w.port)))
		return u.String()
	}
	// A key=value string: a key given twice takes its last value.
	return fmt.Sprintf("%s host='%s' port=%d", base, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(w.host), w.port)
}

// pool returns the pool shard of the worker that holds a schema, or nil for the coordinator.
func (r *citusRouter) pool(schema string) (*pgxpool.Pool, string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	node := r.schemas[schema]
	if node == "" || time.Now().Before(r.down[node]) {
		return nil, ""
	}
	return pickPool(r.pools[node], schema), node
}

// missed takes note of a transaction that failed on a worker before anything ran there: the worker
// could not be reached (left out for citusNodeRetry), or it no longer holds the schema and could not
// forward to the one that does (the schema goes to the coordinator until the next refresh).
func (r *citusRouter) missed(schema, node string, err error) bool {
	var connectErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connectErr):
		r.mu.Lock()
		r.down[node] = time.Now().Add(citusNodeRetry)
		r.mu.Unlock()
		return true
	case errors.As(err, &pgErr) && pgErr.Code == "08006":
		r.mu.Lock()
		if r.schemas[schema] == node {
			delete(r.schemas, schema)
		}
		r.mu.Unlock()
		return true
	}
	return false
}

func (r *citusRouter) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pools := range r.pools {
		closeAll(pools)
	}
	r.pools = map[string][]*pgxpool.Pool{}
}

// CitusWorkers is how many of the tenants the app knows a Citus worker for, and -1 when it does not
// route to workers.
func (db *DB) CitusWorkers() int {
	db.citusMu.RLock()
	r := db.citus
	db.citusMu.RUnlock()
	if r == nil {
		return -1
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.schemas)
}
