package postgres

import (
	"context"
	"encoding/json"
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
)

// NotifyChannel is where the operator announces a changed tenant (payload: its schema).
const NotifyChannel = "tenantry_tenants"

// Registry holds every tenant of the registry in memory, by host, kept current by LISTEN/NOTIFY. A
// lookup costs no database work.
type Registry struct {
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

const selectTenants = `
SELECT t.schema_name, t.role_name, t.namespace, t.name, t.display_name, t.state, t.schema_version,
       t.branding, t.settings,
       coalesce((SELECT array_agg(h.host ORDER BY h.host) FROM tenantry.tenant_hosts h
                 WHERE h.schema_name = t.schema_name), '{}')
FROM tenantry.tenants t`

func scanTenant(row pgx.CollectableRow) (*app.Tenant, error) {
	t := &app.Tenant{}
	var branding, settings []byte
	if err := row.Scan(&t.Schema, &t.Role, &t.Namespace, &t.Name, &t.DisplayName, &t.State, &t.SchemaVersion,
		&branding, &settings, &t.Hosts); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(branding, &t.Branding); err != nil {
		return nil, fmt.Errorf("tenant %s: branding: %w", t.Schema, err)
	}
	if err := json.Unmarshal(settings, &t.Settings); err != nil {
		return nil, fmt.Errorf("tenant %s: settings: %w", t.Schema, err)
	}
	return t, nil
}

// Sync replaces the registry with every tenant of the database.
func (r *Registry) Sync(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, selectTenants)
	if err != nil {
		return fmt.Errorf("reading the tenant registry: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, scanTenant)
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
	rows, err := q.Query(ctx, selectTenants+" WHERE t.schema_name = $1", schema)
	if err != nil {
		return fmt.Errorf("reading tenant %s: %w", schema, err)
	}
	tenants, err := pgx.CollectRows(rows, scanTenant)
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
func (r *Registry) Run(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), log *slog.Logger) error {
	l := &pgxlisten.Listener{
		Connect:        connect,
		ReconnectDelay: time.Second,
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				log.Warn("registry listener", "error", err)
			}
		},
	}
	l.Handle(NotifyChannel, &listenHandler{r: r, log: log})
	return l.Listen(ctx)
}

type listenHandler struct {
	r   *Registry
	log *slog.Logger
}

func (h *listenHandler) HandleNotification(ctx context.Context, n *pgconn.Notification, conn *pgx.Conn) error {
	return h.r.Refresh(ctx, conn, n.Payload)
}

func (h *listenHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	if err := h.r.Sync(ctx, conn); err != nil {
		return err
	}
	h.log.Info("registry loaded", "tenants", h.r.Len())
	return nil
}
