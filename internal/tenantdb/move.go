package tenantdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A tenant moves between two databases (shards) through PostgreSQL's logical replication: the source
// publishes the tenant's schema (and the tenant's row of tenantry.move_markers), the target subscribes
// with a copy of what is there, and catches up. The cut-over takes the source's tables from writers
// (they wait for writes in flight, then revoke writing from the tenant role), writes a marker that the
// target sees once it has applied everything before it, copies the sequences, and leaves the home
// registry to name the target. Publication, subscription and replication slot share one name, derived
// from the schema.

// MoveName is the name of a schema's publication, subscription and replication slot. A name too long
// for PostgreSQL (63 bytes) ends in a hash of the whole schema name: cut short, the names of two
// schemas that differ only in their last characters (the hash that ends a schema's name) would meet,
// and one tenant's move would take the other's publication for its own.
func MoveName(schema string) string {
	name := "tenantry_move_" + schema
	if len(name) > 63 {
		sum := sha256.Sum256([]byte(schema))
		name = name[:63-17] + "_" + hex.EncodeToString(sum[:8])
	}
	return name
}

// MoveRequirementError says what a server lacks to take part in a move, for a person to fix.
type MoveRequirementError struct{ Msg string }

func (e *MoveRequirementError) Error() string { return e.Msg }

// CheckMoveSource checks that this database can publish a tenant: wal_level logical and a superuser
// login (PostgreSQL 15 asks a superuser for FOR TABLES IN SCHEMA), with a replication slot to spare.
func (db *DB) CheckMoveSource(ctx context.Context) error {
	var level string
	var super bool
	var slotsFree int
	err := db.pool.QueryRow(ctx, `SELECT current_setting('wal_level'),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)`).Scan(&level, &super, &slotsFree)
	switch {
	case err != nil:
		return fmt.Errorf("checking the source server: %w", err)
	case level != "logical":
		return &MoveRequirementError{fmt.Sprintf("the source server has wal_level=%s: set wal_level=logical (a restart) to move tenants off it", level)}
	case !super:
		return &MoveRequirementError{"the source's admin connection string is not a superuser's: publishing a schema (FOR TABLES IN SCHEMA) needs one on PostgreSQL 15"}
	case slotsFree < 1:
		return &MoveRequirementError{"the source server has no free replication slot: raise max_replication_slots"}
	}
	return nil
}

// CheckMoveTarget checks that this database can subscribe: a superuser login (CREATE SUBSCRIPTION).
func (db *DB) CheckMoveTarget(ctx context.Context) error {
	var super bool
	if err := db.pool.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return fmt.Errorf("checking the target server: %w", err)
	}
	if !super {
		return &MoveRequirementError{"the target's admin connection string is not a superuser's: CREATE SUBSCRIPTION needs one on PostgreSQL 15"}
	}
	return nil
}

// MoveMark is the comment a move's publication carries: the tenant's identity and the move's start, so
// that a publication found under the move's name is used only if the operator made it for this move.
func MoveMark(namespace, name string, started time.Time) string {
	return fmt.Sprintf("tenantry move %s/%s %d", namespace, name, started.UnixNano())
}

// Publish publishes a tenant's schema, and its marker row, on a replication slot of its own (created
// apart from the subscription, which lets source and target share a server), and marks the publication
// with mark (MoveMark). A publication of the move's name is kept only if it carries mark and publishes
// exactly the tenant's schema and its marker row, and its slot only with it: anything else found under
// that name (left by another move, or made by someone else) is dropped and made anew.
func (db *DB) Publish(ctx context.Context, schema, mark string) error {
	name := MoveName(schema)
	var pub, ours, slot, slotActive bool
	if err := db.pool.QueryRow(ctx, `
SELECT p.oid IS NOT NULL,
       coalesce(obj_description(p.oid, 'pg_publication') = $3 AND NOT p.puballtables
           AND (SELECT array_agg(pn.pnnspid::regnamespace::text) FROM pg_publication_namespace pn WHERE pn.pnpubid = p.oid)
               = ARRAY[quote_ident($2)]
           AND (SELECT array_agg(pr.prrelid::regclass::text) FROM pg_publication_rel pr WHERE pr.prpubid = p.oid)
               = ARRAY['tenantry.move_markers'], false),
       s.slot_name IS NOT NULL, coalesce(s.active, false)
FROM (SELECT) AS one
LEFT JOIN pg_publication p ON p.pubname = $1
LEFT JOIN pg_replication_slots s ON s.slot_name = $1`, name, schema, mark).Scan(&pub, &ours, &slot, &slotActive); err != nil {
		return fmt.Errorf("looking up publication %s: %w", name, err)
	}
	if !ours {
		// Whatever stands under the move's name was not made for this move: it goes, slot and all.
		if slotActive {
			return fmt.Errorf("replication slot %s, which this move did not make, is in use: drop it (pg_drop_replication_slot) to let the move go on", name)
		}
		if err := db.Unpublish(ctx, schema); err != nil {
			return err
		}
		pub, slot = false, false
	}
	if !pub {
		// The marker row first exists on the source, so that the copy brings it along.
		if _, err := db.pool.Exec(ctx, `INSERT INTO tenantry.move_markers (schema_name, token) VALUES ($1, '')
ON CONFLICT (schema_name) DO NOTHING`, schema); err != nil {
			return fmt.Errorf("writing the move marker of %s: %w", schema, err)
		}
		q := pgx.Identifier{name}.Sanitize()
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "CREATE PUBLICATION "+q+" FOR TABLES IN SCHEMA "+
				pgx.Identifier{schema}.Sanitize()+", TABLE tenantry.move_markers WHERE (schema_name = "+quoteLiteral(schema)+")"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "COMMENT ON PUBLICATION "+q+" IS "+quoteLiteral(mark))
			return err
		})
		if err != nil {
			return fmt.Errorf("publishing schema %s: %w", schema, err)
		}
	}
	if !slot {
		if _, err := db.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name); err != nil {
			return fmt.Errorf("creating replication slot %s: %w", name, err)
		}
	}
	return nil
}

// Subscribed reports whether the tenant's subscription exists on this (target) database, and whether
// it was paused (PauseSubscription).
func (db *DB) Subscribed(ctx context.Context, schema string) (subscribed, paused bool, err error) {
	err = db.pool.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_or(NOT subenabled), false) FROM pg_subscription
WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		MoveName(schema)).Scan(&subscribed, &paused)
	return subscribed, paused, err
}

// ClearMarker removes the tenant's marker row on this (target) database, so that the subscription's copy
// brings the source's. (The schema's own tables are emptied on the tenant session: EmptyCopy.)
func (db *DB) ClearMarker(ctx context.Context, schema string) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM tenantry.move_markers WHERE schema_name = $1`, schema); err != nil {
		return fmt.Errorf("clearing the move marker of %s: %w", schema, err)
	}
	return nil
}

// Subscribe subscribes this (target) database to the tenant's publication on the source, copying
// what is there first. sourceURI is how the target server reaches the source. The subscription reads
// the source with row_security off: should that login be subject to the tenant's row-level security (a
// login without SUPERUSER or BYPASSRLS), a policy the tenant forced on its own tables stops the copy
// instead of running the tenant's code as that login.
func (db *DB) Subscribe(ctx context.Context, schema, sourceURI string) error {
	name := pgx.Identifier{MoveName(schema)}.Sanitize()
	conninfo, err := rowSecurityOff(sourceURI)
	if err != nil {
		return err
	}
	_, err = db.pool.Exec(ctx, "CREATE SUBSCRIPTION "+name+" CONNECTION "+quoteLiteral(conninfo)+
		" PUBLICATION "+name+" WITH (create_slot = false, slot_name = "+quoteLiteral(MoveName(schema))+", copy_data = true)")
	if err != nil {
		return fmt.Errorf("subscribing to schema %s: %w", schema, err)
	}
	return nil
}

// keywordOptions finds the options keyword in a keyword/value connection string.
var keywordOptions = regexp.MustCompile(`(^|\s)options\s*=`)

// rowSecurityOff adds "-c row_security=off" to the options of a libpq connection string, a URI
// (postgres://...) or keyword/value pairs. The URI's query is edited as libpq reads it: it starts at the
// first "?" after the user info (which ends at the first "@" before any "/"), and a parameter's name is
// percent-decoded. A URI that names options twice is refused: libpq would take the last.
func rowSecurityOff(conninfo string) (string, error) {
	const off, offEncoded = "-c row_security=off", "-c%20row_security%3Doff"
	rest, isURI := strings.CutPrefix(conninfo, "postgres://")
	if !isURI {
		rest, isURI = strings.CutPrefix(conninfo, "postgresql://")
	}
	if !isURI {
		if keywordOptions.MatchString(conninfo) {
			return "", errors.New("the source's connection string sets options in keyword/value form: write it as a URI (postgres://...)")
		}
		return conninfo + " options='" + off + "'", nil
	}
	afterUser := len(conninfo) - len(rest)
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		afterUser += i + 1
	}
	q := strings.IndexByte(conninfo[afterUser:], '?')
	if q < 0 {
		return conninfo + "?options=" + offEncoded, nil
	}
	base, query := conninfo[:afterUser+q], conninfo[afterUser+q+1:]
	params := strings.Split(query, "&")
	found := -1
	for i, p := range params {
		key, value, _ := strings.Cut(p, "=")
		if name, err := url.PathUnescape(key); err != nil {
			return "", fmt.Errorf("the source's connection string does not parse: %w", err)
		} else if name != "options" {
			continue
		}
		if found >= 0 {
			return "", errors.New("the source's connection string sets options twice")
		}
		found = i
		params[i] = key + "=" + value + "%20" + offEncoded
	}
	if found < 0 {
		params = append(params, "options="+offEncoded)
	}
	return base + "?" + strings.TrimPrefix(strings.Join(params, "&"), "&"), nil
}

// PauseSubscription stops the tenant's subscription on this (target) database from applying anything
// more, and waits (up to the context's end) until its apply worker is gone.
func (db *DB) PauseSubscription(ctx context.Context, schema string) error {
	name := MoveName(schema)
	if _, err := db.pool.Exec(ctx, "ALTER SUBSCRIPTION "+pgx.Identifier{name}.Sanitize()+" DISABLE"); err != nil {
		return fmt.Errorf("pausing subscription %s: %w", name, err)
	}
	for {
		var workers int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL`,
			name).Scan(&workers); err != nil {
			return fmt.Errorf("waiting for subscription %s to stop: %w", name, err)
		}
		if workers == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// CopyProgress says how far the subscription's first copy is: tables copied (ready) of all.
func (db *DB) CopyProgress(ctx context.Context, schema string) (ready, total int, err error) {
	err = db.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE sr.srsubstate = 'r'), count(*)
FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = $1`, MoveName(schema)).Scan(&ready, &total)
	if err != nil {
		err = fmt.Errorf("reading the copy's progress: %w", err)
	}
	return ready, total, err
}

// SubscriptionErrors is how many errors the target's apply and copy workers have met (PostgreSQL 15
// counts them in pg_stat_subscription_stats): a copy that fails is tried again, and counted.
func (db *DB) SubscriptionErrors(ctx context.Context, schema string) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce(max(apply_error_count + sync_error_count), 0)
FROM pg_stat_subscription_stats WHERE subname = $1`, MoveName(schema)).Scan(&n)
	return n, err
}

// Lag is how many bytes of WAL the source has written that the subscription has not confirmed.
func (db *DB) Lag(ctx context.Context, schema string) (int64, error) {
	var lag int64
	err := db.pool.QueryRow(ctx, `SELECT coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0)
FROM pg_replication_slots WHERE slot_name = $1`, MoveName(schema)).Scan(&lag)
	return lag, err
}

// Mark writes a new marker token for the tenant on this (source) database; with fence, in the same
// transaction, it first waits for the tenant's writes in flight (EXCLUSIVE locks on its tables: reads go
// on) and takes writing away from the tenant role, so that nothing is written after the marker. It
// returns the token, which the target has applied everything before once it shows it.
func (db *DB) Mark(ctx context.Context, schema, role string, fence bool, lockTimeout time.Duration) (string, error) {
	buf := make([]byte, 12)
	_, _ = rand.Read(buf)
	token := hex.EncodeToString(buf)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if fence {
			// The fence waits for the tenant's writes in flight, which may wait for a table it has
			// already locked: with the shortest deadlock_timeout it is the one to find such a deadlock,
			// and the one rolled back (and tried again), not the tenant's write.
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = 10"); err != nil {
				return err
			}
			rows, _ := tx.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1`, schema)
			tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(tables) > 0 {
				if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(tables, ", ")+" IN EXCLUSIVE MODE"); err != nil {
					return fmt.Errorf("waiting for the tenant's writes in flight: %w", err)
				}
			}
			if _, err := tx.Exec(ctx, "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "+
				pgx.Identifier{schema}.Sanitize()+" FROM "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("taking writes away from the tenant: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO tenantry.move_markers (schema_name, token) VALUES ($1, $2)
ON CONFLICT (schema_name) DO UPDATE SET token = EXCLUDED.token`, schema, token)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("marking schema %s for its move: %w", schema, err)
	}
	return token, nil
}

// Unfence gives writing back to the tenant role on this (source) database: a move that did not happen.
func (db *DB) Unfence(ctx context.Context, schema, role string) error {
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil || !exists {
		return err
	}
	_, err := db.pool.Exec(ctx, "GRANT INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "+
		pgx.Identifier{schema}.Sanitize()+" TO "+pgx.Identifier{role}.Sanitize())
	if err != nil {
		return fmt.Errorf("giving writes back to the tenant: %w", err)
	}
	return nil
}

// HasMarker reports whether this (target) database has applied the marker token.
func (db *DB) HasMarker(ctx context.Context, schema, token string) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM tenantry.move_markers WHERE schema_name = $1 AND token = $2)`,
		schema, token).Scan(&ok)
	return ok, err
}

// Unsubscribe drops the tenant's subscription on this (target) database, if there is one, without
// touching the slot (DropPublication drops it on the source).
func (db *DB) Unsubscribe(ctx context.Context, schema string) error {
	ok, _, err := db.Subscribed(ctx, schema)
	if err != nil || !ok {
		return err
	}
	name := pgx.Identifier{MoveName(schema)}.Sanitize()
	for _, stmt := range []string{"ALTER SUBSCRIPTION " + name + " DISABLE",
		"ALTER SUBSCRIPTION " + name + " SET (slot_name = NONE)", "DROP SUBSCRIPTION " + name} {
		if _, err := db.pool.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("dropping subscription %s: %w", MoveName(schema), err)
		}
	}
	return nil
}

// Unpublish drops the tenant's publication, replication slot and replication login on this (source)
// database, if they exist. A slot still in use (its subscription's worker has not let go yet) is an
// error: try again.
func (db *DB) Unpublish(ctx context.Context, schema string) error {
	name := MoveName(schema)
	if _, err := db.pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("dropping publication %s: %w", name, err)
	}
	if _, err := db.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err != nil {
		return fmt.Errorf("dropping replication slot %s: %w", name, err)
	}
	if _, err := db.pool.Exec(ctx, `DELETE FROM tenantry.move_markers WHERE schema_name = $1`, schema); err != nil {
		return fmt.Errorf("removing the move marker of %s: %w", schema, err)
	}
	return db.dropMoveLogin(ctx, schema)
}

// moveLogin is the role of a tenant's move's replication login on the source's server: named as the
// move, marked as the operator's for that schema (a role of that name without the mark is someone
// else's, and is never used, given a password or dropped).
func moveLogin(schema string) Role {
	return Role{Name: MoveName(schema), Mark: "tenantry move login " + schema}
}

// movers is the group of every move's login, for pg_hba.conf to name (it grants nothing).
var movers = Role{Name: "tenantry_movers", Mark: "tenantry movers"}

// moveLoginAttrs are the move login's attributes: it replicates, inherits nothing, and is not subject to
// row-level security, so that no policy a tenant forced on its own tables runs as it (the copy reads
// with row_security off besides: Subscribe).
const moveLoginAttrs = "LOGIN REPLICATION NOINHERIT BYPASSRLS"

// MoveLogin makes the replication login a tenant's move subscribes with, on this (source) database, and
// gives it a new random password, which it returns with its name. The login may replicate and read the
// move's marker row; the tenant's own tables only once the tenant's session has granted them
// (TenantSession.GrantCopy). So the subscription, which the target keeps in pg_subscription while the
// move lasts, holds this login's password, never the admin's; and the login goes when the move ends
// (Unpublish).
func (db *DB) MoveLogin(ctx context.Context, schema string) (name, password string, err error) {
	role := moveLogin(schema)
	if err := db.ensureRole(ctx, role, moveLoginAttrs); err != nil {
		return "", "", err
	}
	password = randomPassword()
	clause, err := passwordClause(password)
	if err != nil {
		return "", "", err
	}
	q := pgx.Identifier{role.Name}.Sanitize()
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" "+moveLoginAttrs+" "+clause); err != nil {
		return "", "", fmt.Errorf("setting the password of the move's login %q: %w", role.Name, err)
	}
	// pg_hba.conf admits every move's login by this group ("+tenantry_movers"): from the targets only.
	if err := db.ensureRole(ctx, movers, "NOLOGIN"); err != nil {
		return "", "", err
	}
	if _, err := db.pool.Exec(ctx, "GRANT "+pgx.Identifier{movers.Name}.Sanitize()+" TO "+q); err != nil {
		return "", "", fmt.Errorf("adding the move's login %q to %s: %w", role.Name, movers.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "GRANT USAGE ON SCHEMA tenantry TO "+q); err != nil {
		return "", "", fmt.Errorf("letting the move's login %q read its marker: %w", role.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "GRANT SELECT ON tenantry.move_markers TO "+q); err != nil {
		return "", "", fmt.Errorf("letting the move's login %q read its marker: %w", role.Name, err)
	}
	return role.Name, password, nil
}

// dropMoveLogin drops a tenant's move's replication login, with what it was granted in this database,
// if it exists and is the operator's. It is disabled first (no login, no replication, no password), so
// that a login the server will not drop (something of another database of the server depends on it: a
// tenant's session there may grant it default privileges) can do nothing; such a one is left, disabled.
func (db *DB) dropMoveLogin(ctx context.Context, schema string) error {
	role := moveLogin(schema)
	if ours, err := db.marked(ctx, role); err != nil || !ours {
		return err
	}
	q := pgx.Identifier{role.Name}.Sanitize()
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" NOLOGIN NOREPLICATION NOBYPASSRLS PASSWORD NULL"); err != nil {
		return fmt.Errorf("disabling the move's login %q: %w", role.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "DROP OWNED BY "+q); err != nil {
		return fmt.Errorf("revoking what the move's login %q was granted: %w", role.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "DROP ROLE IF EXISTS "+q); err != nil && !isCode(err, codeDependentObjects) {
		return fmt.Errorf("dropping the move's login %q: %w", role.Name, err)
	}
	return nil
}

// Where says where two databases are: on one PostgreSQL server (cluster), where roles and role
// memberships are shared, and whether they are one and the same database.
func Where(ctx context.Context, a, b *DB) (sameServer, sameDatabase bool, err error) {
	var ida, idb int64
	var dba, dbb string
	q := `SELECT system_identifier, current_database()::text FROM pg_control_system()`
	if err := a.pool.QueryRow(ctx, q).Scan(&ida, &dba); err != nil {
		return false, false, err
	}
	if err := b.pool.QueryRow(ctx, q).Scan(&idb, &dbb); err != nil {
		return false, false, err
	}
	return ida == idb, ida == idb && dba == dbb, nil
}

// SetShard records in this (home) database that the tenant's schema is now served from shard (empty:
// this database), at the version given, and tells the app.
func (db *DB) SetShard(ctx context.Context, namespace, name, shard string, version int64) error {
	_, err := db.pool.Exec(ctx, `
WITH moved AS (
    UPDATE tenantry.tenants SET shard = $3, schema_version = $4, updated_at = now()
    WHERE namespace = $1 AND name = $2
    RETURNING namespace, app, schema_name
)
SELECT tenantry.announce(namespace, app, schema_name) FROM moved`, namespace, name, shard, version)
	if err != nil {
		return fmt.Errorf("recording tenant %s/%s on shard %q: %w", namespace, name, shard, err)
	}
	return nil
}

// RetireMoved keeps the schema a tenant moved away from: renamed (the name it had stays free for the
// tenant's return), recorded in tenantry.moved_schemas, and, with ownRow (a shard's registry, not the
// home database's, whose row routes the tenant wherever it is), its registry row removed. Writing was
// taken from its role at the cut-over. It returns the new name.
func (db *DB) RetireMoved(ctx context.Context, namespace, name, schema, role, movedTo string, ownRow bool) (string, error) {
	kept := schema
	if len(kept) > 48 {
		kept = kept[:48]
	}
	kept = fmt.Sprintf("%s_moved_%s", kept, strings.ToLower(fmt.Sprintf("%x", time.Now().Unix())))
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
			return err
		}
		if exists {
			if _, err := tx.Exec(ctx, "ALTER SCHEMA "+pgx.Identifier{schema}.Sanitize()+" RENAME TO "+pgx.Identifier{kept}.Sanitize()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO tenantry.moved_schemas (schema_name, role_name, namespace, name, moved_to)
VALUES ($1, $2, $3, $4, $5)`, kept, role, namespace, name, movedTo); err != nil {
				return err
			}
		}
		if !ownRow {
			return nil
		}
		_, err := tx.Exec(ctx, `DELETE FROM tenantry.tenants WHERE namespace = $1 AND name = $2`, namespace, name)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("keeping the schema %s the tenant moved away from: %w", schema, err)
	}
	return kept, nil
}

// DropMoved drops a copy of a tenant's schema that is not (or no longer) served: the one a tenant moved
// away from, or the target's of a move undone; with ownRow (a shard's registry, not the home
// database's), its registry row too. The role stays: it may own the schema on the other side.
func (db *DB) DropMoved(ctx context.Context, namespace, name, schema string, ownRow bool) error {
	if _, err := db.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("dropping the copy of schema %s: %w", schema, err)
	}
	if !ownRow {
		return nil
	}
	return db.Unregister(ctx, namespace, name)
}

// Move is a tenant's move in progress, as the home registry records it (tenantry.moves): the record
// that lets a move interrupted anywhere be finished or undone.
type Move struct {
	Source, Target string // shard names; empty is the home database
	StartedAt      time.Time
}

// ErrNoMove says the tenant has no move in progress.
var ErrNoMove = errors.New("no move in progress")

// StartMove records, in this (home) database, that a tenant is moving; a move already recorded is
// returned as it is.
func (db *DB) StartMove(ctx context.Context, namespace, name, source, target string) (Move, error) {
	m := Move{}
	err := db.pool.QueryRow(ctx, `
WITH started AS (
    INSERT INTO tenantry.moves (namespace, name, source, target) VALUES ($1, $2, $3, $4)
    ON CONFLICT (namespace, name) DO NOTHING
    RETURNING source, target, started_at
)
SELECT source, target, started_at FROM started
UNION ALL
SELECT source, target, started_at FROM tenantry.moves WHERE namespace = $1 AND name = $2
LIMIT 1`, namespace, name, source, target).Scan(&m.Source, &m.Target, &m.StartedAt)
	if err != nil {
		return m, fmt.Errorf("recording the move of %s/%s: %w", namespace, name, err)
	}
	return m, nil
}

// CurrentMove returns the tenant's move in progress, or ErrNoMove.
func (db *DB) CurrentMove(ctx context.Context, namespace, name string) (Move, error) {
	m := Move{}
	err := db.pool.QueryRow(ctx, `SELECT source, target, started_at FROM tenantry.moves WHERE namespace = $1 AND name = $2`,
		namespace, name).Scan(&m.Source, &m.Target, &m.StartedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNoMove
	}
	if err != nil {
		return m, fmt.Errorf("reading the move of %s/%s: %w", namespace, name, err)
	}
	return m, nil
}

// EndMove removes the record of a tenant's move: done, or undone.
func (db *DB) EndMove(ctx context.Context, namespace, name string) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM tenantry.moves WHERE namespace = $1 AND name = $2`, namespace, name); err != nil {
		return fmt.Errorf("ending the move of %s/%s: %w", namespace, name, err)
	}
	return nil
}
