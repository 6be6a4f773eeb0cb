package tenantdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which the registry announces a changed tenant; the
// payload is the tenant's schema name.
const NotifyChannel = "tenantry_tenants"

// Tenant states in the registry.
const (
	StateProvisioning = "provisioning" // schema not yet migrated: the app answers 503
	StateActive       = "active"
	StateSuspended    = "suspended"
)

// registryDDL creates the control schema. Hosts have a table of their own whose primary key is the
// race-free arbiter of which tenant holds a host.
const registryDDL = `
CREATE SCHEMA IF NOT EXISTS tenantry;
CREATE TABLE IF NOT EXISTS tenantry.tenants (
    schema_name    text        PRIMARY KEY,
    role_name      text        NOT NULL,
    namespace      text        NOT NULL,
    name           text        NOT NULL,
    uid            text        NOT NULL,
    display_name   text        NOT NULL,
    branding       jsonb       NOT NULL DEFAULT '{}',
    settings       jsonb       NOT NULL DEFAULT '{}',
    state          text        NOT NULL CHECK (state IN ('provisioning', 'active', 'suspended')),
    schema_version bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);
CREATE TABLE IF NOT EXISTS tenantry.tenant_hosts (
    host        text PRIMARY KEY,
    schema_name text NOT NULL REFERENCES tenantry.tenants ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tenant_hosts_schema_name_idx ON tenantry.tenant_hosts (schema_name);
`

// registryLock serialises creating the registry: CREATE ... IF NOT EXISTS is not safe against itself.
const registryLock = int64(0x74656e616e747279) // "tenantry"

// EnsureRegistry creates the control schema once per DB; later calls send nothing.
func (db *DB) EnsureRegistry(ctx context.Context) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.registryOK {
		return nil
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", registryLock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, registryDDL)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating the registry schema tenantry: %w", err)
	}
	db.registryOK = true
	return nil
}

// Registration is a tenant's row in the registry.
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
	Hosts         []string
}

// HostConflictError says a host is held by another tenant.
type HostConflictError struct {
	Host            string
	HolderNamespace string
	HolderName      string
}

func (e *HostConflictError) Error() string {
	return fmt.Sprintf("host %q is already served by tenant %s/%s", e.Host, e.HolderNamespace, e.HolderName)
}

// SchemaConflictError says the schema a tenant derives is registered to another tenant.
type SchemaConflictError struct {
	Schema          string
	HolderNamespace string
	HolderName      string
}

func (e *SchemaConflictError) Error() string {
	return fmt.Sprintf("schema %q already belongs to tenant %s/%s", e.Schema, e.HolderNamespace, e.HolderName)
}

// Register writes a tenant's row and hosts in one transaction and notifies the app. It claims the
// schema and the hosts: when either is held by another tenant it changes nothing and returns a
// *SchemaConflictError or *HostConflictError. The unique keys decide, so two concurrent claims of one
// host cannot both win.
func (db *DB) Register(ctx context.Context, r Registration) error {
	branding, err := json.Marshal(r.Branding)
	if err != nil {
		return fmt.Errorf("encoding branding: %w", err)
	}
	settings, err := json.Marshal(r.Settings)
	if err != nil {
		return fmt.Errorf("encoding settings: %w", err)
	}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var ns, name string
		err := tx.QueryRow(ctx, `
INSERT INTO tenantry.tenants AS t
    (schema_name, role_name, namespace, name, uid, display_name, branding, settings, state, schema_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (schema_name) DO UPDATE
SET uid = EXCLUDED.uid, display_name = EXCLUDED.display_name, branding = EXCLUDED.branding,
    settings = EXCLUDED.settings,
    -- A caller that has not seen the schema migrated yet does not take a live tenant offline.
    state = CASE WHEN EXCLUDED.state = 'provisioning' AND t.schema_version > 0 THEN t.state ELSE EXCLUDED.state END,
    schema_version = greatest(t.schema_version, EXCLUDED.schema_version),
    updated_at = now()
WHERE t.namespace = EXCLUDED.namespace AND t.name = EXCLUDED.name
RETURNING namespace, name`,
			r.Schema, r.Role, r.Namespace, r.Name, r.UID, r.DisplayName, branding, settings, r.State, r.SchemaVersion,
		).Scan(&ns, &name)
		if errors.Is(err, pgx.ErrNoRows) {
			conflict := &SchemaConflictError{Schema: r.Schema}
			if err := tx.QueryRow(ctx, `SELECT namespace, name FROM tenantry.tenants WHERE schema_name = $1`,
				r.Schema).Scan(&conflict.HolderNamespace, &conflict.HolderName); err != nil {
				return fmt.Errorf("looking up the holder of schema %q: %w", r.Schema, err)
			}
			return conflict
		}
		if err != nil {
			return fmt.Errorf("writing registry row: %w", err)
		}
		// Release hosts no longer listed, claim the new ones; a host another tenant holds stays theirs.
		if _, err := tx.Exec(ctx, `
WITH released AS (
    DELETE FROM tenantry.tenant_hosts WHERE schema_name = $1 AND NOT host = ANY($2)
)
INSERT INTO tenantry.tenant_hosts (host, schema_name)
SELECT unnest($2::text[]), $1
ON CONFLICT (host) DO NOTHING`, r.Schema, r.Hosts); err != nil {
			return fmt.Errorf("claiming hosts: %w", err)
		}
		conflict := &HostConflictError{}
		err = tx.QueryRow(ctx, `
SELECT h.host, t.namespace, t.name
FROM tenantry.tenant_hosts h JOIN tenantry.tenants t USING (schema_name)
WHERE h.host = ANY($1) AND h.schema_name <> $2
ORDER BY array_position($1, h.host)
LIMIT 1`, r.Hosts, r.Schema).Scan(&conflict.Host, &conflict.HolderNamespace, &conflict.HolderName)
		if err == nil {
			return conflict
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("checking hosts: %w", err)
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, r.Schema)
		return err
	})
	var hc *HostConflictError
	var sc *SchemaConflictError
	if err != nil && !errors.As(err, &hc) && !errors.As(err, &sc) {
		return fmt.Errorf("registering tenant %s/%s: %w", r.Namespace, r.Name, err)
	}
	return err
}

// SetState records a tenant's state and schema version and notifies the app.
func (db *DB) SetState(ctx context.Context, schema, state string, version int64) error {
	_, err := db.pool.Exec(ctx, `
WITH updated AS (
    UPDATE tenantry.tenants SET state = $2, schema_version = $3, updated_at = now()
    WHERE schema_name = $1
    RETURNING schema_name
)
SELECT pg_notify($4, schema_name) FROM updated`, schema, state, version, NotifyChannel)
	if err != nil {
		return fmt.Errorf("setting tenant %q %s at version %d: %w", schema, state, version, err)
	}
	return nil
}

// Unregister removes a tenant (and so its hosts) from the registry and notifies the app. Only the row of
// the named Tenant is removed, never another tenant's that derives the same schema.
func (db *DB) Unregister(ctx context.Context, schema, namespace, name string) error {
	_, err := db.pool.Exec(ctx, `
WITH deleted AS (
    DELETE FROM tenantry.tenants WHERE schema_name = $1 AND namespace = $2 AND name = $3
    RETURNING schema_name
)
SELECT pg_notify($4, schema_name) FROM deleted`, schema, namespace, name, NotifyChannel)
	if err != nil {
		return fmt.Errorf("removing tenant %s/%s from the registry: %w", namespace, name, err)
	}
	return nil
}
