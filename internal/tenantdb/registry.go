package tenantdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/internal/registry"
)

// EnsureRegistry creates the control schema, or brings it up to registry.Version, once per DB; later
// calls send nothing. A registry already at the version costs one read and takes no lock. Creation and
// upgrades serialise on the lock of tenantry.registry_version's row, which only the admin login can
// take, and wait for it no longer than the lock timeout.
func (db *DB) EnsureRegistry(ctx context.Context) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.registryOK {
		return nil
	}
	var version int
	var secret *string
	err := db.pool.QueryRow(ctx, "SELECT version, migration_secret FROM tenantry.registry_version").Scan(&version, &secret)
	if err != nil && !isCode(err, codeUndefinedTable, codeUndefinedSchema, codeUndefinedColumn) {
		return fmt.Errorf("reading the registry's version: %w", err)
	}
	if err != nil || version < registry.Version || secret == nil {
		if secret, err = db.upgradeRegistry(ctx); err != nil {
			return fmt.Errorf("creating the registry schema tenantry: %w", err)
		}
	}
	db.registryOK, db.migrationSecret = true, *secret
	return nil
}

// upgradeRegistry creates the registry's version row if need be, then, holding its lock, brings the
// registry to registry.Version and gives it a migration secret if it has none. It returns the secret.
func (db *DB) upgradeRegistry(ctx context.Context) (*string, error) {
	// Two operators creating the schema or table at once: one of them fails on a unique key; by the
	// time it tries again, both exist.
	for attempt := 0; ; attempt++ {
		_, err := db.pool.Exec(ctx, registry.Bootstrap)
		if err == nil {
			break
		}
		if attempt > 0 || !isCode(err, codeUniqueViolation, codeDuplicateObject, codeDuplicateTable, codeDuplicateSchema) {
			return nil, err
		}
	}
	// The control schema and all in it belong to this login (or to a superuser): one that someone else
	// made first, with triggers of their own on its tables, would run them as the operator.
	var foreign *string
	if err := db.pool.QueryRow(ctx, `
SELECT min(o.owner::regrole::text) FROM (
    SELECT nspowner AS owner FROM pg_namespace WHERE nspname = 'tenantry'
    UNION ALL SELECT relowner FROM pg_class WHERE relnamespace = 'tenantry'::regnamespace
    UNION ALL SELECT proowner FROM pg_proc WHERE pronamespace = 'tenantry'::regnamespace) o
WHERE o.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = o.owner)`).Scan(&foreign); err != nil {
		return nil, err
	}
	if foreign != nil {
		return nil, fmt.Errorf("the schema tenantry, or something in it, belongs to %s, not to the operator's login: "+
			"drop it, or give it to that login, before the operator uses this database", *foreign)
	}
	buf := make([]byte, 16)
	_, _ = rand.Read(buf)
	var secret *string
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// A read lock any app login may hold on the registry makes the upgrade's ALTER TABLE wait, and
		// every read of the registry behind it: the wait is kept short, and tried again later.
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 2000"); err != nil {
			return err
		}
		var version int
		if err := tx.QueryRow(ctx, "SELECT version FROM tenantry.registry_version FOR UPDATE").Scan(&version); err != nil {
			return err
		}
		if version < registry.Version { // else another operator upgraded it meanwhile
			if _, err := tx.Exec(ctx, registry.DDL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE tenantry.registry_version SET version = $1", registry.Version); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `UPDATE tenantry.registry_version SET migration_secret = coalesce(migration_secret, $1)
RETURNING migration_secret`, hex.EncodeToString(buf)).Scan(&secret)
	})
	return secret, err
}

// Registration is a tenant's row in the registry. Schema and Role are the names derived from the
// tenant's identity (registry.TenantName); a tenant already registered keeps the names it has.
type Registration struct {
	Schema        string
	Role          string
	Namespace     string
	Name          string
	UID           string
	DisplayName   string
	Branding      any // marshalled to JSON
	Settings      any // marshalled to JSON
	State         string
	SchemaVersion int64
	// Hosts are claimed in the home database only; a shard's registry holds none.
	Hosts []string
	// Shard is the ExpenseApp shard that holds the schema, recorded with the tenant's first row and
	// kept: empty for this database.
	Shard string
	// NamespaceUID is the UID of the Tenant's namespace. A row the registry retains (deletionPolicy
	// Retain) goes back only to a Tenant of a namespace with the UID it recorded, or to one whose
	// namespace succeeds that one (Successor): else Register returns a *RetainedElsewhereError.
	NamespaceUID string
	// App is the ExpenseApp whose tenant it is: its login alone reads the row.
	App string
	// Successor, when set, is the UID of the namespace (RetainedLegacy: of a row that recorded none)
	// whose retained rows this Tenant's namespace takes over.
	Successor *string
}

// RetainedLegacy is Registration.Successor for a retained row recorded before namespaces' UIDs were.
const RetainedLegacy = "legacy"

// RetainedElsewhereError says the registry records a schema for this namespace and name for a
// namespace of that name that has been deleted and created again since (its UID differs): retained,
// or left live by a Tenant whose finalizer was removed by hand.
type RetainedElsewhereError struct {
	Schema string
	// NamespaceUID is the UID the row recorded ("" before UIDs were recorded).
	NamespaceUID string
}

func (e *RetainedElsewhereError) Error() string {
	uid := e.NamespaceUID
	if uid == "" {
		uid = RetainedLegacy
	}
	return fmt.Sprintf("the registry records schema %q for a Tenant of this name in an earlier namespace of this name "+
		"(UID %s), not this one: a namespace created again under the same name does not get its data. If this "+
		"namespace succeeds that one, the platform team labels it %s=%s", e.Schema, uid, "tenantry.dev/adopt-retained-from", uid)
}

// Identity is what the registry records for a tenant: the schema and role that belong to it.
type Identity struct {
	Schema, Role string
}

// HostConflictError says a host is held by another tenant. Its message names that tenant only when it
// is in the same namespace: who else a cluster serves is not for every namespace to learn.
type HostConflictError struct {
	Host            string
	HolderNamespace string
	HolderName      string
	namespace       string // of the tenant that asked
}

// HostHeldBy is the conflict of a tenant of namespace asking for a host that the tenant holderName of
// holderNamespace holds.
func HostHeldBy(host, holderNamespace, holderName, namespace string) *HostConflictError {
	return &HostConflictError{Host: host, HolderNamespace: holderNamespace, HolderName: holderName, namespace: namespace}
}

func (e *HostConflictError) Error() string {
	if e.HolderNamespace == e.namespace {
		return fmt.Sprintf("host %q is already served by tenant %s", e.Host, e.HolderName)
	}
	return fmt.Sprintf("host %q is already served by a tenant in another namespace", e.Host)
}

// SchemaConflictError says the schema or role a tenant derives is recorded for another identity.
type SchemaConflictError struct {
	Schema string
}

func (e *SchemaConflictError) Error() string {
	return fmt.Sprintf("schema or role %q is recorded for another tenant", e.Schema)
}

// Register writes a tenant's row and hosts in one transaction and notifies the app, and returns the
// schema, role and schema version recorded for the tenant's identity (namespace and name): the ones of its existing
// row, which a tenant keeps for life (also across a Retain and a return), else the derived ones in r.
// A schema or role recorded for another identity is never taken: that is a *SchemaConflictError. A
// host held by another tenant is a *HostConflictError. Either way nothing is written; the unique keys
// decide, so two concurrent claims cannot both win.
func (db *DB) Register(ctx context.Context, r Registration) (FleetMember, error) {
	branding, err := json.Marshal(r.Branding)
	if err != nil {
		return FleetMember{}, fmt.Errorf("encoding branding: %w", err)
	}
	settings, err := json.Marshal(r.Settings)
	if err != nil {
		return FleetMember{}, fmt.Errorf("encoding settings: %w", err)
	}
	id := FleetMember{Namespace: r.Namespace, Name: r.Name}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
INSERT INTO tenantry.tenants AS t
    (schema_name, role_name, namespace, name, uid, display_name, branding, settings, state, schema_version, shard, namespace_uid, app)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14)
ON CONFLICT (namespace, name) DO UPDATE
SET uid = EXCLUDED.uid, display_name = EXCLUDED.display_name, branding = EXCLUDED.branding,
    settings = EXCLUDED.settings, app = CASE WHEN EXCLUDED.app = '' THEN t.app ELSE EXCLUDED.app END,
    namespace_uid = CASE WHEN EXCLUDED.namespace_uid = '' THEN t.namespace_uid ELSE EXCLUDED.namespace_uid END,
    -- A caller that has not seen the schema migrated yet does not take a live tenant offline.
    state = CASE WHEN EXCLUDED.state = 'provisioning' AND t.schema_version > 0 THEN
                 CASE WHEN t.state = 'retained' THEN 'provisioning' ELSE t.state END
            ELSE EXCLUDED.state END,
    schema_version = greatest(t.schema_version, EXCLUDED.schema_version),
    updated_at = now()
-- A row goes back to its own namespace, or to the one the platform named its successor; a live row
-- from before UIDs were recorded to its namespace of the same name (and records its UID).
WHERE EXCLUDED.namespace_uid = '' OR t.namespace_uid = EXCLUDED.namespace_uid
   OR (t.namespace_uid = '' AND t.state <> 'retained') OR ($13::text IS NOT NULL AND t.namespace_uid = $13)
RETURNING schema_name, role_name, schema_version, shard`,
			r.Schema, r.Role, r.Namespace, r.Name, r.UID, r.DisplayName, branding, settings, r.State, r.SchemaVersion, r.Shard,
			r.NamespaceUID, successor(r.Successor), r.App,
		).Scan(&id.Schema, &id.Role, &id.Version, &id.Shard)
		if isCode(err, codeUniqueViolation) {
			return &SchemaConflictError{Schema: r.Schema}
		}
		if errors.Is(err, pgx.ErrNoRows) { // recorded for a namespace of this name before this one
			re := &RetainedElsewhereError{}
			if err := tx.QueryRow(ctx, `SELECT schema_name, namespace_uid FROM tenantry.tenants WHERE namespace = $1 AND name = $2`,
				r.Namespace, r.Name).Scan(&re.Schema, &re.NamespaceUID); err != nil {
				return fmt.Errorf("reading the retained registry row: %w", err)
			}
			return re
		}
		if err != nil {
			return fmt.Errorf("writing registry row: %w", err)
		}
		if err := claimHosts(ctx, tx, id.Schema, r.Hosts, r.Namespace); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT tenantry.announce($1, $2, $3)", r.Namespace, r.App, id.Schema)
		return err
	})
	var hc *HostConflictError
	var sc *SchemaConflictError
	var re *RetainedElsewhereError
	if err != nil && !errors.As(err, &hc) && !errors.As(err, &sc) && !errors.As(err, &re) {
		return FleetMember{}, fmt.Errorf("registering tenant %s/%s: %w", r.Namespace, r.Name, err)
	}
	return id, err
}

// successor is a Registration's Successor as the registry spells it: NULL for none, the empty string for a row that
// recorded no namespace UID.
func successor(s *string) *string {
	if s != nil && *s == RetainedLegacy {
		legacy := ""
		return &legacy
	}
	return s
}

// claimHosts releases the hosts a tenant's schema no longer lists and claims the ones it lists; a host
// another tenant holds stays theirs, and is a *HostConflictError. It then checks that the schema holds
// every host it lists: a host whose holder let go of it between the claim and the check (its tenant was
// deleted a moment ago) is claimed again, never left unclaimed by a tenant that is told it has it.
func claimHosts(ctx context.Context, tx pgx.Tx, schema string, hosts []string, namespace string) error {
	for range 5 {
		if _, err := tx.Exec(ctx, `
WITH released AS (
    DELETE FROM tenantry.tenant_hosts WHERE schema_name = $1 AND NOT host = ANY($2)
)
INSERT INTO tenantry.tenant_hosts (host, schema_name)
SELECT unnest($2::text[]), $1
ON CONFLICT (host) DO NOTHING`, schema, hosts); err != nil {
			return fmt.Errorf("claiming hosts: %w", err)
		}
		conflict := &HostConflictError{namespace: namespace}
		var holder *string
		err := tx.QueryRow(ctx, `
SELECT want.host, h.schema_name, coalesce(t.namespace, ''), coalesce(t.name, '')
FROM unnest($1::text[]) WITH ORDINALITY AS want (host, i)
LEFT JOIN tenantry.tenant_hosts h ON h.host = want.host
LEFT JOIN tenantry.tenants t ON t.schema_name = h.schema_name
WHERE h.schema_name IS DISTINCT FROM $2
ORDER BY want.i
LIMIT 1`, hosts, schema).Scan(&conflict.Host, &holder, &conflict.HolderNamespace, &conflict.HolderName)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // every host is the schema's
		case err != nil:
			return fmt.Errorf("checking hosts: %w", err)
		case holder != nil:
			return conflict
		}
		// Released since the claim: claim it again.
	}
	return fmt.Errorf("claiming hosts: host %q keeps being claimed and let go; try again", hosts[0])
}

// Lookup returns the schema, role, schema version and shard recorded for a tenant's identity, and false
// when it has no row.
func (db *DB) Lookup(ctx context.Context, namespace, name string) (FleetMember, bool, error) {
	m := FleetMember{Namespace: namespace, Name: name}
	err := db.pool.QueryRow(ctx, `SELECT schema_name, role_name, schema_version, shard FROM tenantry.tenants
WHERE namespace = $1 AND name = $2`, namespace, name).Scan(&m.Schema, &m.Role, &m.Version, &m.Shard)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("looking up tenant %s/%s in the registry: %w", namespace, name, err)
	}
	return m, true, nil
}

// SetAppChannel records the channel on which an ExpenseApp hears of changes to its own tenants
// (registry.ChannelPrefix; the app reads it from its Secret).
func (db *DB) SetAppChannel(ctx context.Context, namespace, app, channel string) error {
	if _, err := db.pool.Exec(ctx, `INSERT INTO tenantry.app_channels (namespace, app, channel) VALUES ($1, $2, $3)
ON CONFLICT (namespace, app) DO UPDATE SET channel = EXCLUDED.channel`, namespace, app, channel); err != nil {
		return fmt.Errorf("recording the announcement channel of ExpenseApp %s/%s: %w", namespace, app, err)
	}
	return nil
}

// SetState records a tenant's state and schema version and notifies the app.
func (db *DB) SetState(ctx context.Context, schema, state string, version int64) error {
	_, err := db.pool.Exec(ctx, `
WITH updated AS (
    UPDATE tenantry.tenants SET state = $2, schema_version = $3, updated_at = now()
    WHERE schema_name = $1
    RETURNING namespace, app, schema_name
)
SELECT tenantry.announce(namespace, app, schema_name) FROM updated`, schema, state, version)
	if err != nil {
		return fmt.Errorf("setting tenant %q %s at version %d: %w", schema, state, version, err)
	}
	return nil
}

// Retire takes a tenant deleted with deletionPolicy Retain out of service: its hosts are released, its
// row stays as the record of who owns the schema and role (state retained), with the UID of its
// namespace if the row had none yet, and the app is notified.
func (db *DB) Retire(ctx context.Context, namespace, name, namespaceUID string) error {
	_, err := db.pool.Exec(ctx, `
WITH retired AS (
    UPDATE tenantry.tenants SET state = 'retained', updated_at = now(),
        namespace_uid = CASE WHEN namespace_uid = '' THEN $3 ELSE namespace_uid END
    WHERE namespace = $1 AND name = $2
    RETURNING namespace, app, schema_name
), released AS (
    DELETE FROM tenantry.tenant_hosts WHERE schema_name IN (SELECT schema_name FROM retired)
)
SELECT tenantry.announce(namespace, app, schema_name) FROM retired`, namespace, name, namespaceUID)
	if err != nil {
		return fmt.Errorf("retiring tenant %s/%s in the registry: %w", namespace, name, err)
	}
	return nil
}

// Unregister removes a tenant (and so its hosts) from the registry and notifies the app.
func (db *DB) Unregister(ctx context.Context, namespace, name string) error {
	_, err := db.pool.Exec(ctx, `
WITH deleted AS (
    DELETE FROM tenantry.tenants WHERE namespace = $1 AND name = $2
    RETURNING namespace, app, schema_name
)
SELECT tenantry.announce(namespace, app, schema_name) FROM deleted`, namespace, name)
	if err != nil {
		return fmt.Errorf("removing tenant %s/%s from the registry: %w", namespace, name, err)
	}
	return nil
}
