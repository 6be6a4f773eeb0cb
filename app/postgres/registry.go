package postgres

import (
	"context"
	"fmt"
	"log/slog"
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
	loaded   chan struct{}
	once     sync.Once
	syncs    atomic.Int64
}

// NewRegistry returns an empty registry; Run fills it and keeps it current.
func NewRegistry() *Registry {
	return &Registry{byHost: map[string]*app.Tenant{}, bySchema: map[string]*app.Tenant{}, loaded: make(chan struct{})}
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
	for _, t := range tenants {
		bySchema[t.Schema] = t
		for _, h := range t.Hosts {
			byHost[h] = t
		}
	}
	r.mu.Lock()
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
		r.bySchema[t.Schema] = t
		for _, h := range t.Hosts {
			r.byHost[h] = t
		}
	}
	return nil
}

// Querier is what Sync and Refresh read through: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Run keeps the registry current until ctx ends: it LISTENs on a connection of its own (connect must
// reach PostgreSQL directly, not through PgBouncer in transaction mode), re-reads everything on every
// (re)connect, so nothing missed while disconnected stays missed, and re-reads a tenant when notified.
// A read that fails (the registry at start-up, or one tenant after a notification) is not left to the
// next reconnect: the whole registry is read again on a fresh connection, with backoff, until it works.
func (r *Registry) Run(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), log *slog.Logger) error {
	stale := make(chan struct{}, 1)
	go r.resync(ctx, connect, stale, log)
	l := &pgxlisten.Listener{
		Connect:        connect,
		ReconnectDelay: time.Second,
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				log.Warn("registry listener", "error", err)
			}
		},
	}
	l.Handle(registry.NotifyChannel, &listenHandler{r: r, log: log, stale: stale})
	return l.Listen(ctx)
}

// Backoff of the re-reads after a failed one.
const (
	resyncFirstDelay = 250 * time.Millisecond
	resyncMaxDelay   = 10 * time.Second
)

// resync reads the whole registry again each time a read failed, until one succeeds.
func (r *Registry) resync(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), stale <-chan struct{}, log *slog.Logger) {
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
				return r.Sync(ctx, conn)
			}()
			if err == nil {
				log.Info("registry re-read after a failed read", "tenants", r.Len())
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
	r     *Registry
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
	if err := h.r.Refresh(ctx, conn, n.Payload); err != nil {
		return h.failed(err)
	}
	return nil
}

func (h *listenHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	if err := h.r.Sync(ctx, conn); err != nil {
		return h.failed(err)
	}
	h.log.Info("registry loaded", "tenants", h.r.Len())
	return nil
}
