// Package registry is the contract between the operator and the app: the control schema's tables, the
// channel on which changes are announced, the tenant states, the row type with its branding and
// settings, and the rules that derive a tenant's schema and role names from its identity. The operator
// (internal/tenantdb) writes the registry and the app (app/postgres) reads it; both import this package
// and neither keeps a copy.
package registry

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A changed tenant is announced by NOTIFY, its schema name the payload, on the channel of its ExpenseApp
// (tenantry.app_channels, tenantry.announce): a name of ChannelBytes random bytes, in hex, after
// "tenantry_", which the operator gives the app in its Secret. An app's login hears no other app's
// tenants, since it cannot know their channels.
const (
	ChannelPrefix = "tenantry_"
	ChannelBytes  = 16
)

// ValidChannel says whether a channel name is one the operator makes: ChannelPrefix and ChannelBytes
// bytes in hex. Anything else found in an app's Secret (which its namespace may edit) is replaced.
func ValidChannel(channel string) bool {
	hexPart, ok := strings.CutPrefix(channel, ChannelPrefix)
	if !ok || len(hexPart) != 2*ChannelBytes {
		return false
	}
	for _, c := range hexPart {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Where the app sends a tenant's transactions when its home database is a Citus coordinator: the
// operator passes the ExpenseApp's choice to the app (CITUS_ROUTING), which follows it (app/postgres).
const (
	// CitusRouteWorkers sends each to the worker that holds the tenant's schema (the default).
	CitusRouteWorkers = "workers"
	// CitusRouteCoordinator sends everything to the coordinator, e.g. when the app reaches it through
	// PgBouncer and the workers are not reachable from the app.
	CitusRouteCoordinator = "coordinator"
)

// HomeShard is what the ExpenseApp API calls the database of spec.database (tenantryv1.HomeShard); a
// registry's shard column calls the database it is in the empty string.
const HomeShard = "home"

// ShardColumn is a shard's name as a registry's shard column writes it: the empty string for home.
func ShardColumn(shard string) string {
	if shard == HomeShard {
		return ""
	}
	return shard
}

// ShardName is the shard a registry's shard column names: home for the empty string.
func ShardName(column string) string {
	if column == "" {
		return HomeShard
	}
	return column
}

// Tenant states in the registry.
const (
	// StateProvisioning: schema not yet migrated; the app answers 503.
	StateProvisioning = "provisioning"
	StateActive       = "active"
	StateSuspended    = "suspended"
	// StateRetained: the Tenant was deleted with deletionPolicy Retain. The row keeps recording who owns
	// the schema and role; the tenant has no hosts, and no app login may act as its role until a Tenant
	// of the same identity returns.
	StateRetained = "retained"
)

// Version is the version of DDL. Raise it with every change to DDL: an operator runs DDL only on a
// database whose registry records an older version (RegistryVersion's table), so that a start-up sends
// no DDL, and takes no lock that a read of the registry could hold up, where nothing changed.
const Version = 7

// Bootstrap creates the control schema and the one-row table that records its version
// (tenantry.registry_version). The operator creates and upgrades the registry while it holds that
// row's lock: a row lock, which only the table's owner, the operator's admin login, can take (it needs
// UPDATE on the table), unlike an advisory lock, which any login can.
const Bootstrap = `
CREATE SCHEMA IF NOT EXISTS tenantry;
CREATE TABLE IF NOT EXISTS tenantry.registry_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
);
INSERT INTO tenantry.registry_version (version) VALUES (0) ON CONFLICT DO NOTHING;
`

// DDL creates the control schema's tables, and brings one created by an earlier release up to date. Hosts have
// a table of their own whose primary key is the race-free arbiter of which tenant holds a host. A row
// records the owner of its schema and role: the Tenant's namespace and name (its identity within the
// database) and its UID (for audit).
var DDL = tables + catalogFunctions

const tables = `
CREATE TABLE IF NOT EXISTS tenantry.tenants (
    schema_name    text        PRIMARY KEY,
    role_name      text        NOT NULL,
    namespace      text        NOT NULL,
    name           text        NOT NULL,
    uid            text        NOT NULL,
    display_name   text        NOT NULL,
    branding       jsonb       NOT NULL DEFAULT '{}',
    settings       jsonb       NOT NULL DEFAULT '{}',
    state          text        NOT NULL,
    schema_version bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);
ALTER TABLE tenantry.tenants DROP CONSTRAINT IF EXISTS tenants_state_check;
ALTER TABLE tenantry.tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'suspended', 'retained'));
-- shard names the ExpenseApp shard that holds the schema; '' is this very database. The home database
-- routes every tenant (its hosts are here); a shard's registry lists the tenants it holds, with shard ''.
ALTER TABLE tenantry.tenants ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT '';
-- namespace_uid is the UID of the Tenant's namespace ('' for rows from before it was recorded): a
-- retained schema goes back only to a Tenant of a namespace with that UID, not to one of a namespace
-- deleted and created again under the same name, unless the platform labels the new one its successor.
ALTER TABLE tenantry.tenants ADD COLUMN IF NOT EXISTS namespace_uid text NOT NULL DEFAULT '';
-- app is the ExpenseApp whose tenant it is (a Tenant's spec.appRef, which cannot change): its login
-- alone reads the row and hears of it. '' for rows from before it was recorded, which every app of the
-- namespace reads until the tenant is registered again.
ALTER TABLE tenantry.tenants ADD COLUMN IF NOT EXISTS app text NOT NULL DEFAULT '';
-- A row from before names the app whose login may act as its tenant's role (the operator's mark on
-- that login, of the row's namespace): registered again by no restart, it is recorded here.
UPDATE tenantry.tenants t SET app = split_part(d.description, '/', -1)
FROM pg_catalog.pg_auth_members m
JOIN pg_catalog.pg_roles tr ON tr.oid = m.roleid
JOIN pg_catalog.pg_shdescription d ON d.objoid = m.member AND d.classoid = 'pg_catalog.pg_authid'::regclass
WHERE t.app = '' AND tr.rolname = t.role_name AND d.description LIKE 'tenantry app %'
  AND split_part(d.description, '/', -2) = t.namespace;
CREATE UNIQUE INDEX IF NOT EXISTS tenants_role_name_key ON tenantry.tenants (role_name);
CREATE TABLE IF NOT EXISTS tenantry.tenant_hosts (
    host        text PRIMARY KEY,
    schema_name text NOT NULL REFERENCES tenantry.tenants ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tenant_hosts_schema_name_idx ON tenantry.tenant_hosts (schema_name);
-- Moves between shards (internal/tenantdb/move.go). moves, in the home database, records each move in
-- progress, so that one interrupted anywhere is finished or undone; move_markers rows travel with a
-- moving schema's replication and tell the operator the target has applied everything before them;
-- moved_schemas records the schemas tenants moved away from and left behind (deletionPolicy Retain).
CREATE TABLE IF NOT EXISTS tenantry.moves (
    namespace  text        NOT NULL,
    name       text        NOT NULL,
    source     text        NOT NULL,
    target     text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS tenantry.move_markers (
    schema_name text PRIMARY KEY,
    token       text NOT NULL
);
CREATE TABLE IF NOT EXISTS tenantry.moved_schemas (
    schema_name text        PRIMARY KEY,
    role_name   text        NOT NULL,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    moved_to    text        NOT NULL,
    moved_at    timestamptz NOT NULL DEFAULT now()
);
-- migration_secret is known to the operators of this database alone (the table is closed to every other
-- login): the key of the advisory lock under which a new schema is migrated is derived from it, so that
-- no other login can compute a schema's key and hold it first (tenantdb.LockID).
ALTER TABLE tenantry.registry_version ADD COLUMN IF NOT EXISTS migration_secret text;
REVOKE ALL ON tenantry.registry_version FROM PUBLIC;
-- Each ExpenseApp's announcement channel: a random name that the operator keeps here (closed to every
-- login but the admin) and in the app's Secret. announce(namespace, app, schema) tells that app (every
-- app of the namespace, for a row that names none), and no other, that a tenant changed; only the admin
-- login, and the registry's own functions, may call it.
CREATE TABLE IF NOT EXISTS tenantry.app_channels (
    namespace text NOT NULL,
    app       text NOT NULL,
    channel   text NOT NULL,
    PRIMARY KEY (namespace, app)
);
REVOKE ALL ON tenantry.app_channels FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenantry.announce(ns text, of_app text, changed text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM pg_notify(c.channel, changed) FROM tenantry.app_channels c
    WHERE c.namespace = ns AND (of_app = '' OR c.app = of_app);
END $f$;
REVOKE ALL ON FUNCTION tenantry.announce(text, text, text) FROM PUBLIC;
-- A migration records its schema's new version in the same transaction, as the tenant role it runs
-- as: this function lets the current role (SET ROLE) record its own row's version, only upwards, and
-- nothing else. Tenant roles reach it through USAGE on the schema; the tables stay closed to them.
CREATE OR REPLACE FUNCTION tenantry.record_schema_version(version bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE ns text; of_app text; changed text;
BEGIN
    UPDATE tenantry.tenants SET schema_version = version, updated_at = now()
    WHERE role_name = current_setting('role') AND schema_version < version
    RETURNING namespace, app, schema_name INTO ns, of_app, changed;
    IF changed IS NOT NULL THEN
        PERFORM tenantry.announce(ns, of_app, changed);
    END IF;
END $f$;
-- An app's login reads the registry rows of its own ExpenseApp's live tenants only: its namespace and
-- name are in the mark the operator gave its role ("tenantry app <database>/<namespace>/<name>",
-- tenantdb.OwnerMark), which it cannot change (COMMENT ON ROLE needs CREATEROLE). Retained rows are
-- nobody's: a namespace of the same name created again must not learn of them. Any other login that is
-- not the tables' owner reads nothing.
CREATE OR REPLACE FUNCTION tenantry.login_app() RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT ARRAY[split_part(d.description, '/', -2), split_part(d.description, '/', -1)]
    FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
    WHERE r.rolname = current_user AND d.description LIKE 'tenantry app %'
$f$;
ALTER TABLE tenantry.tenants ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS app_login_reads_its_tenants ON tenantry.tenants;
CREATE POLICY app_login_reads_its_tenants ON tenantry.tenants FOR SELECT
    USING (state <> 'retained' AND namespace = (SELECT (tenantry.login_app())[1])
           AND app IN ('', (SELECT (tenantry.login_app())[2])));
ALTER TABLE tenantry.tenant_hosts ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS app_login_reads_its_tenants ON tenantry.tenant_hosts;
CREATE POLICY app_login_reads_its_tenants ON tenantry.tenant_hosts FOR SELECT
    USING (schema_name IN (SELECT schema_name FROM tenantry.tenants));
-- A fleet release's migration of a schema holds the lock of the tenant's own registry row, taken as the
-- tenant role it runs as: only a session that may act as the tenant can take it (the advisory key per
-- schema that migrations once held could be taken by any login of the database).
CREATE OR REPLACE FUNCTION tenantry.lock_own_row() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM FROM tenantry.tenants WHERE role_name = current_setting('role') FOR UPDATE;
END $f$;
GRANT USAGE ON SCHEMA tenantry TO PUBLIC;
`

// The two reads of a tenant schema's catalog that a drift comparison makes (tenantdb.TenantSession.Shape
// and ShapeDigest): its objects, and a digest of the catalog rows they are read from.
var (
	//go:embed schema_shape.sql
	shapeSQL string
	//go:embed schema_digest.sql
	digestSQL string
)

// catalogFunctions are those reads as PL/pgSQL functions, so that each session plans them once: they
// cost more to plan than to run, and a tenant session cannot keep a prepared statement (DISCARD ALL, after
// every piece of tenant work, deallocates it, and a tenant's code could prepare one in its place). They
// read the catalog as whoever calls them, a tenant session as the tenant's role, with pg_catalog alone on
// the search_path: no function or operator of a tenant's stands in for a built-in one there. Each looks
// up a few rows per catalog through the catalogs' indexes, whatever the catalogs' statistics say (they lag
// far behind while thousands of tenants are onboarded, and a plan made from them scans whole catalogs):
// one plan, made once, on the indexes.
var catalogFunctions = `
CREATE OR REPLACE FUNCTION tenantry.schema_shape(schema_name text)
RETURNS TABLE (object_kind text, object_name text, can_run_code boolean, object_fields text[], create_statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan AS $shape$
BEGIN
RETURN QUERY
` + shapeSQL + `;
END $shape$;
CREATE OR REPLACE FUNCTION tenantry.schema_digest(schema_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan AS $digest$
BEGIN
RETURN (
` + digestSQL + `);
END $digest$;
`

// Tenant is one customer as the registry describes it.
type Tenant struct {
	Schema        string
	Role          string
	Namespace     string
	Name          string
	DisplayName   string
	State         string
	SchemaVersion int64
	// Shard is the ExpenseApp shard that holds the schema; empty for the database the row was read from.
	Shard    string
	Hosts    []string
	Branding Branding
	Settings Settings
}

// Branding is how pages look for a tenant.
type Branding struct {
	PrimaryColor string `json:"primaryColor,omitempty"`
	LogoURL      string `json:"logoURL,omitempty"`
}

// Settings are a tenant's business rules.
type Settings struct {
	Currency          string `json:"currency,omitempty"`
	ApprovalThreshold *int64 `json:"approvalThreshold,omitempty"`
}

// CurrencyOrDefault is the tenant's currency, USD when unset.
func (s Settings) CurrencyOrDefault() string {
	if s.Currency == "" {
		return "USD"
	}
	return s.Currency
}

// NeedsApproval reports whether an expense of this amount waits for an admin.
func (s Settings) NeedsApproval(amountMinor int64) bool {
	return s.ApprovalThreshold != nil && amountMinor > *s.ApprovalThreshold
}

// SelectServed reads the tenants the app serves (every state but retained), with their hosts. Append
// " AND t.schema_name = $1" for one tenant. ScanTenant reads its rows.
const SelectServed = `
SELECT t.schema_name, t.role_name, t.namespace, t.name, t.display_name, t.state, t.schema_version,
       t.shard, t.branding, t.settings,
       coalesce((SELECT array_agg(h.host ORDER BY h.host) FROM tenantry.tenant_hosts h
                 WHERE h.schema_name = t.schema_name), '{}')
FROM tenantry.tenants t
WHERE t.state <> 'retained'`

// SelectHeld reads the schema version of every tenant a shard holds, from the shard's own registry:
// what the app needs of a shard besides the home database's routing. Append " AND schema_name = $1" for
// one tenant.
const SelectHeld = `SELECT schema_name, schema_version FROM tenantry.tenants WHERE state <> 'retained' AND shard = ''`

// ScanTenant reads one row of SelectServed.
func ScanTenant(row pgx.CollectableRow) (*Tenant, error) {
	t := &Tenant{}
	var branding, settings []byte
	if err := row.Scan(&t.Schema, &t.Role, &t.Namespace, &t.Name, &t.DisplayName, &t.State, &t.SchemaVersion,
		&t.Shard, &branding, &settings, &t.Hosts); err != nil {
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

// CitusSchemaPlacements joins, on a Citus coordinator, each distributed schema (ns) to the worker (n)
// that holds its shards: a schema's tables are colocated, so every row of one schema names the same
// worker. The operator reads it for Tenants' status.node, the app to send tenants to their workers.
const CitusSchemaPlacements = `
FROM pg_dist_schema s
JOIN pg_namespace ns ON ns.oid = s.schemaid
JOIN pg_dist_partition p ON p.colocationid = s.colocationid
JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
JOIN pg_dist_placement pl ON pl.shardid = sh.shardid
JOIN pg_dist_node n ON n.groupid = pl.groupid`
