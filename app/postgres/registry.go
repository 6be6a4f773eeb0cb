package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/internal/registry"
)

// Registry holds every tenant of the registry in memory, by host, kept current by LISTEN/NOTIFY. A
// lookup costs no database work.
type Registry struct {
	// reading serialises Sync and Refresh from query to install, so that what is installed last was
	// also read last: a slow full read cannot undo a newer refresh of one tenant.
	reading  sync.Mutex
	mu       sync.RWMutex
	byHost   map[string]*app.Tenant
	bySchema map[string]*app.Tenant
	// held is, per shard other than home, the schema version of each tenant it holds, from the shard's
	// own registry: a tenant on a shard is at the version its shard records (migrations record it
	// there), whatever the home database's row says.
	held   map[string]map[string]int64
	loaded chan struct{}
	once   sync.Once
	syncs  atomic.Int64
}

// NewRegistry returns an empty registry; Run fills it and keeps it current.
func NewRegistry() *Registry {
	return &Registry{byHost: map[string]*app.Tenant{}, bySchema: map[string]*app.Tenant{}, held: map[string]map[string]int64{},
		loaded: make(chan struct{})}
}

// NormalizeHost turns a Host header into a registry key: lower case, no port, no trailing dot.
func NormalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(h, "[") { // IPv6 literal, never a tenant host but still stripped of its port
		if i := strings.Index(h, "]"); i >= 0 {
			return h[:i+1]
		}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// Lookup returns the tenant serving a Host header, or nil.
func (r *Registry) Lookup(host string) *app.Tenant {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byHost[NormalizeHost(host)]
}

// LookupName returns the tenant with a Tenant name, or nil. It walks every tenant: for development
// hosts (<name>.localhost), not for production routing.
func (r *Registry) LookupName(name string) *app.Tenant {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, t := range r.bySchema {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Len is the number of tenants known.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.bySchema)
}

// Loaded is closed once the registry has been read in full.
func (r *Registry) Loaded() <-chan struct{} { return r.loaded }

// Sync replaces the registry with every tenant of the database. On failure the registry keeps what it
// held: a tenant known before an outage stays known through it.
func (r *Registry) Sync(ctx context.Context, q Querier) error {
	r.reading.Lock()
	defer r.reading.Unlock()
	rows, err := q.Query(ctx, registry.SelectServed)
	if err != nil {
		return fmt.Errorf("reading the tenant registry: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, registry.ScanTenant)
	if err != nil {
		return fmt.Errorf("reading the tenant registry: %w", err)
	}
	byHost := map[string]*app.Tenant{}
	bySchema := map[string]*app.Tenant{}
	r.mu.Lock()
	for _, t := range tenants {
		r.heldVersion(t)
		bySchema[t.Schema] = t
		for _, h := range t.Hosts {
			byHost[h] = t
		}
	}
	r.byHost, r.bySchema = byHost, bySchema
	r.mu.Unlock()
	r.once.Do(func() { close(r.loaded) })
	r.syncs.Add(1)
	return nil
}

// Syncs is how many times the registry has been read in full: once per (re)connect of the listener.
func (r *Registry) Syncs() int64 { return r.syncs.Load() }

// Refresh re-reads one tenant; a tenant no longer in the registry is dropped.
func (r *Registry) Refresh(ctx context.Context, q Querier, schema string) error {
	r.reading.Lock()
	defer r.reading.Unlock()
	rows, err := q.Query(ctx, registry.SelectServed+" AND t.schema_name = $1", schema)
	if err != nil {
		return fmt.Errorf("reading tenant %s: %w", schema, err)
	}
	tenants, err := pgx.CollectRows(rows, registry.ScanTenant)
	if err != nil {
		return fmt.Errorf("reading tenant %s: %w", schema, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.bySchema[schema]; old != nil {
		for _, h := range old.Hosts {
			if r.byHost[h] == old {
				delete(r.byHost, h)
			}
		}
		delete(r.bySchema, schema)
	}
	for _, t := range tenants {
		r.install(t)
	}
	return nil
}

// install puts a tenant in the maps, in place of the one of its schema. r.mu is held.
func (r *Registry) install(t *app.Tenant) {
	r.heldVersion(t)
	r.bySchema[t.Schema] = t
	for _, h := range t.Hosts {
		r.byHost[h] = t
	}
}

// heldVersion sets the schema version of a tenant on a shard to the shard's record (0 until the shard's
// registry has been read: the app does not serve a schema it cannot vouch for). r.mu is held.
func (r *Registry) heldVersion(t *app.Tenant) {
	if t.Shard != "" {
		t.SchemaVersion = r.held[t.Shard][t.Schema]
	}
}

// SyncShard replaces what the registry knows of the tenants a shard holds with the shard's own
// registry: their schema versions.
func (r *Registry) SyncShard(ctx context.Context, shard string, q Querier) error {
	return r.readHeld(ctx, shard, q, registry.SelectHeld, nil)
}

// RefreshShard re-reads one schema's version from a shard's registry.
func (r *Registry) RefreshShard(ctx context.Context, shard string, q Querier, schema string) error {
	return r.readHeld(ctx, shard, q, registry.SelectHeld+" AND schema_name = $1", &schema)
}

func (r *Registry) readHeld(ctx context.Context, shard string, q Querier, sql string, schema *string) error {
	r.reading.Lock()
	defer r.reading.Unlock()
	var args []any
	if schema != nil {
		args = append(args, *schema)
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("reading the registry of shard %s: %w", shard, err)
	}
	versions := map[string]int64{}
	var name string
	var version int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &version}, func() error {
		versions[name] = version
		return nil
	}); err != nil {
		return fmt.Errorf("reading the registry of shard %s: %w", shard, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if schema == nil || r.held[shard] == nil {
		r.held[shard] = versions
	} else {
		delete(r.held[shard], *schema)
		maps.Copy(r.held[shard], versions)
	}
	// Tenants are shared with requests in flight: each changed one is replaced, never written to.
	for s, t := range r.bySchema {
		if t.Shard == shard && (schema == nil || s == *schema) && t.SchemaVersion != r.held[shard][s] {
			c := *t
			for _, h := range t.Hosts {
				if r.byHost[h] == t {
					delete(r.byHost, h)
				}
			}
			r.install(&c)
		}
	}
	return nil
}

// Querier is what Sync and Refresh read through: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Run keeps the registry current until ctx ends: it LISTENs on channel (the app's own, which the
// operator gives it: registry.ChannelPrefix) on a connection of its own (connect must reach PostgreSQL
// directly, not through PgBouncer in transaction mode), re-reads everything on every (re)connect, so
// nothing missed while disconnected stays missed, and re-reads a tenant when notified.
// A read that fails (the registry at start-up, or one tenant after a notification) is not left to the
// next reconnect: the whole registry is read again on a fresh connection, with backoff, until it works.
func (r *Registry) Run(ctx context.Context, channel string, connect func(context.Context) (*pgx.Conn, error), log *slog.Logger) error {
	return r.listen(ctx, channel, connect, log, source{sync: r.Sync, refresh: r.Refresh})
}

// RunShard keeps what the registry knows of a shard's tenants (their schema versions) current until ctx
// ends, from the shard's own registry, the way Run does for the home database.
func (r *Registry) RunShard(ctx context.Context, shard, channel string, connect func(context.Context) (*pgx.Conn, error),
	log *slog.Logger) error {
	return r.listen(ctx, channel, connect, log, source{
		sync: func(ctx context.Context, q Querier) error { return r.SyncShard(ctx, shard, q) },
		refresh: func(ctx context.Context, q Querier, schema string) error {
			return r.RefreshShard(ctx, shard, q, schema)
		},
	})
}

// source is one database's registry: how to read it whole, and one tenant of it.
type source struct {
	sync    func(context.Context, Querier) error
	refresh func(context.Context, Querier, string) error
}

func (r *Registry) listen(ctx context.Context, channel string, connect func(context.Context) (*pgx.Conn, error), log *slog.Logger,
	src source) error {
	stale := make(chan struct{}, 1)
	go resync(ctx, connect, stale, log, src, r.Len)
	l := &pgxlisten.Listener{
		Connect:        connect,
		ReconnectDelay: time.Second,
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				log.Warn("registry listener", "error", err)
			}
		},
	}
	l.Handle(channel, &listenHandler{src: src, len: r.Len, log: log, stale: stale})
	return l.Listen(ctx)
}

// Backoff of the re-reads after a failed one.
const (
	resyncFirstDelay = 250 * time.Millisecond
	resyncMaxDelay   = 10 * time.Second
)

// resync reads the whole registry again each time a read failed, until one succeeds.
func resync(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), stale <-chan struct{}, log *slog.Logger,
	src source, tenants func() int) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-stale:
		}
		for delay := resyncFirstDelay; ; delay = min(2*delay, resyncMaxDelay) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			err := func() error {
				conn, err := connect(ctx)
				if err != nil {
					return err
				}
				defer conn.Close(context.WithoutCancel(ctx))
				return src.sync(ctx, conn)
			}()
			if err == nil {
				log.Info("registry re-read after a failed read", "tenants", tenants())
				break
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("registry re-read failed; trying again", "in", min(2*delay, resyncMaxDelay).String(), "error", err)
		}
	}
}

type listenHandler struct {
	src   source
	len   func() int
	log   *slog.Logger
	stale chan<- struct{}
}

// failed asks for a full re-read; one pending request stands for any number.
func (h *listenHandler) failed(err error) error {
	select {
	case h.stale <- struct{}{}:
	default:
	}
	return err
}

func (h *listenHandler) HandleNotification(ctx context.Context, n *pgconn.Notification, conn *pgx.Conn) error {
	if err := h.src.refresh(ctx, conn, n.Payload); err != nil {
		return h.failed(err)
	}
	return nil
}

func (h *listenHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	if err := h.src.sync(ctx, conn); err != nil {
		return h.failed(err)
	}
	h.log.Info("registry loaded", "tenants", h.len())
	return nil
}
