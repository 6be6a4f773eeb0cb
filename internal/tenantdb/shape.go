package tenantdb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Shape is what a schema holds, as its catalog describes it: every object in it (tables, columns with
// their types, defaults and nullability, sequences, indexes, constraints, triggers, rules, policies,
// views, functions, types, operators, default privileges and the rest), with owners and grants. Names
// of the schema and of its role are written as <schema> and <tenant>, so that the shapes of two tenants
// of one release are equal. Data is not part of it.
type Shape struct {
	objects map[string]SchemaObject
	// Digest is the digest of the catalog rows the shape was read from (ShapeDigest), taken first in the
	// same transaction: a change that lands between the two is in the shape and not in the digest, so the
	// next digest differs and the schema is read again. "" when it cannot tell.
	Digest string
}

// SchemaObject is one object of a Shape.
type SchemaObject struct {
	// Kind is what the catalog calls it: table, column, index, constraint, trigger, view, function...
	Kind string
	// Name is unique within its kind in the schema: "table.column" for what belongs to a table.
	Name string
	// Code says the object can run code of its own when the app or the operator uses the schema:
	// functions, views, triggers, rules, policies, operators.
	Code bool
	// Fields are what the object is made of, in the catalog's words (its definition, type, owner...).
	Fields []Field
	// Create is the statement that makes the object again as it is, where there is one: for columns,
	// constraints, indexes, views, rules, triggers and functions. It is not compared.
	Create string
}

// Field is one property of a SchemaObject.
type Field struct{ Name, Value string }

func (o SchemaObject) key() string { return o.Kind + " " + o.Name }

// Len is the number of objects.
func (s Shape) Len() int { return len(s.objects) }

// Fingerprint is a digest of the whole shape: two schemas with the same fingerprint hold the same
// objects, made the same way.
func (s Shape) Fingerprint() string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(s.objects)) {
		o := s.objects[k]
		_, _ = fmt.Fprintf(h, "%s\x00%t", k, o.Code)
		for _, f := range o.Fields {
			_, _ = fmt.Fprintf(h, "\x00%s=%s", f.Name, f.Value)
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Shape reads the schema's shape on the tenant session, in one catalog query (the registry's
// tenantry.schema_shape, internal/registry/schema_shape.sql): the catalog as the tenant role sees it.
// Objects are found through pg_depend's index on the namespace they belong to, and what hangs off a
// table through the table's, so that the cost does not grow with the number of schemas. The search_path
// is pg_catalog alone: an operator or function the tenant planted (an "=" for names, say) must not decide
// which schema is read, or what its objects compare equal to; names in the schema read qualified, and
// the qualification becomes <schema> (canonicalizer). The digest of the rows read (ShapeDigest) comes
// first. A lock held on the schema's tables holds the read for a second at most (catalogLockTimeout):
// it fails, and the failure is reported, rather than the last comparison kept.
func (s *TenantSession) Shape(ctx context.Context) (Shape, error) {
	canon := canonicalizer(s.id)
	shape := Shape{objects: map[string]SchemaObject{}}
	schema := pgx.Identifier{s.id.Schema}.Sanitize()
	err := s.inCatalogTx(ctx, func(tx pgx.Tx) error {
		var digest *string
		if err := tx.QueryRow(ctx, digestQuery, schema).Scan(&digest); err != nil {
			return err
		}
		if digest != nil {
			shape.Digest = *digest
		}
		rows, err := tx.Query(ctx, `SELECT object_kind, object_name, can_run_code, object_fields, create_statement
FROM tenantry.schema_shape($1)`, schema)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o SchemaObject
			var fields []string
			if err := rows.Scan(&o.Kind, &o.Name, &o.Code, &fields, &o.Create); err != nil {
				return err
			}
			o.Name, o.Create = canon(o.Name), canon(o.Create)
			for i := 0; i+1 < len(fields); i += 2 {
				o.Fields = append(o.Fields, Field{Name: fields[i], Value: canon(fields[i+1])})
			}
			// Names are quoted where they need it, so none repeats; one that did would be drift, never
			// stand in for the other.
			name := o.Name
			for n := 2; shape.objects[o.key()].Kind != ""; n++ {
				o.Name = fmt.Sprintf("%s (#%d)", name, n)
			}
			shape.objects[o.key()] = o
		}
		return rows.Err()
	})
	if err != nil {
		return Shape{}, fmt.Errorf("reading the catalog of schema %s: %w", s.id.Schema, err)
	}
	return shape, nil
}

// ShapeDigest reads, in one catalog query on the tenant session (the registry's tenantry.schema_digest,
// internal/registry/schema_digest.sql), a digest of every catalog row the schema's Shape is read from:
// each row's identity and the transaction that last wrote it, which any change to the row replaces.
// While it equals Shape.Digest, the shape has not changed, and the cost is a fraction of reading it:
// it reads no definition and opens no table. "" when the schema holds an object of a kind the digest
// does not cover: only Shape can tell then.
func (s *TenantSession) ShapeDigest(ctx context.Context) (string, error) {
	var digest *string
	err := s.inCatalogTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, digestQuery, pgx.Identifier{s.id.Schema}.Sanitize()).Scan(&digest)
	})
	if err != nil {
		return "", fmt.Errorf("reading the catalog digest of schema %s: %w", s.id.Schema, err)
	}
	if digest == nil {
		return "", nil
	}
	return *digest, nil
}

// digestQuery reads a schema's catalog digest (the registry's tenantry.schema_digest).
const digestQuery = "SELECT tenantry.schema_digest($1)"

// ShapeDigests reads the catalog digests of many schemas in one statement: ShapeDigest's for each
// ("" where the digest cannot tell), in one round trip. A drift pass reads its fleet's digests so, and
// then reads in full, on each tenant's session, only the schemas whose digest changed.
//
// It runs on the operator's tenant login acting as no tenant (NOINHERIT: it holds no tenant's
// privileges), with pg_catalog alone on the search_path. That is enough, and no less safe than a
// tenant's session: the digest reads catalog rows, which every role may read, opens no relation of a
// schema, and runs no code of a tenant's; nothing is left on the session for another to find. A schema
// that does not exist gets "", as one whose digest cannot tell.
func (db *DB) ShapeDigests(ctx context.Context, schemas []string) (map[string]string, error) {
	if err := db.EnsureRegistry(ctx); err != nil {
		return nil, err
	}
	pool, err := db.tenantLogin(ctx)
	if err != nil {
		return nil, err
	}
	quoted := make([]string, len(schemas))
	for i, s := range schemas {
		quoted[i] = pgx.Identifier{s}.Sanitize()
	}
	digests := make(map[string]string, len(schemas))
	err = withTenantConn(ctx, pool, func(conn *pgxpool.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog', true), "+
				"pg_catalog.set_config('lock_timeout', $1, true)", catalogLockTimeout); err != nil {
				return err
			}
			// A schema gone meanwhile gets no digest (its caller reads it on its own session, and says
			// so), rather than fail the batch.
			rows, err := tx.Query(ctx, "SELECT i, CASE WHEN pg_catalog.to_regnamespace(s) IS NOT NULL THEN "+
				"tenantry.schema_digest(s) END FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u (s, i)", quoted)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var i int
				var digest *string
				if err := rows.Scan(&i, &digest); err != nil {
					return err
				}
				if digest != nil {
					digests[schemas[i-1]] = *digest
				} else {
					digests[schemas[i-1]] = ""
				}
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading the catalog digests of %d schemas: %w", len(schemas), err)
	}
	return digests, nil
}

// catalogLockTimeout bounds how long a catalog read waits for a lock on one of the schema's tables
// (a definition's deparsing takes a share lock): a session of the tenant's that holds one fails the
// read at once, and the failure is what is reported.
const catalogLockTimeout = "1000"

// inCatalogTx runs fn in a transaction of the tenant session with pg_catalog alone on the search_path
// and a short lock timeout (catalogLockTimeout).
func (s *TenantSession) inCatalogTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.inTxOn(ctx, "pg_catalog", false, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('lock_timeout', $1, true)", catalogLockTimeout); err != nil {
			return err
		}
		return fn(tx)
	})
}

// canonicalizer returns what writes a catalog text of one tenant's schema as it reads for any tenant:
// the schema's qualification of a name becomes <schema>., and the schema's and the role's names
// elsewhere (owners, grants) become <schema> and <tenant>.
func canonicalizer(id Identity) func(string) string {
	word := func(name string) *regexp.Regexp {
		q := regexp.QuoteMeta(name)
		return regexp.MustCompile(`"` + q + `"|\b` + q + `\b`)
	}
	qualified := regexp.MustCompile(`("` + regexp.QuoteMeta(id.Schema) + `"|\b` + regexp.QuoteMeta(id.Schema) + `)\.`)
	role, schema := word(id.Role), word(id.Schema)
	return func(v string) string {
		if !strings.Contains(v, id.Schema) && !strings.Contains(v, id.Role) {
			return v
		}
		v = qualified.ReplaceAllString(v, "<schema>.")
		v = role.ReplaceAllString(v, "<tenant>")
		return schema.ReplaceAllString(v, "<schema>")
	}
}

// Change is how an object of a schema differs from the release's.
type Change string

// The kinds of difference.
const (
	// Extra: the schema has an object the release does not define.
	Extra Change = "extra"
	// Missing: the release defines an object the schema does not have.
	Missing Change = "missing"
	// Changed: both have it, made differently.
	Changed Change = "changed"
)

// Difference is one object that differs between the release's shape and a schema's.
type Difference struct {
	Change Change
	// Object is the schema's object (the release's when it is missing).
	Object SchemaObject
	// Fields are the properties that differ, for a changed object.
	Fields []FieldChange
}

// FieldChange is one property of a changed object: what the release says, and what the schema holds.
type FieldChange struct{ Name, Want, Got string }

// Planted says the difference is code the release did not write: a function, view, trigger, rule,
// policy or operator that is extra or changed, and runs when the app or the operator uses the schema.
func (d Difference) Planted() bool { return d.Object.Code && d.Change != Missing }

// String says what differs, in one line a person can read.
func (d Difference) String() string {
	what := d.Object.Kind + " " + d.Object.Name
	switch {
	case d.Planted() && d.Change == Extra:
		return "planted " + what + " (code the release does not have)" + definition(d.Object)
	case d.Change == Missing:
		return "missing " + what
	case d.Change == Extra:
		return "extra " + what + definition(d.Object)
	}
	parts := make([]string, 0, len(d.Fields))
	for _, f := range d.Fields {
		if len(f.Want)+len(f.Got) > 80 {
			parts = append(parts, f.Name+" differs")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s, not %s", f.Name, orNone(f.Got), orNone(f.Want)))
	}
	prefix := "changed "
	if d.Planted() {
		prefix = "planted code: changed "
	}
	return prefix + what + ": " + strings.Join(parts, "; ")
}

// definition is ": " and the object's definition or type, cut short, when it has one.
func definition(o SchemaObject) string {
	for _, f := range o.Fields {
		if (f.Name == "definition" || f.Name == "type") && f.Value != "" {
			v := strings.Join(strings.Fields(f.Value), " ")
			if len(v) > 160 {
				v = v[:157] + "..."
			}
			return ": " + v
		}
	}
	return ""
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// Compare lists how got differs from want, the release's shape: extra, missing and changed objects,
// planted code first, then by kind and name.
// The columns and constraints of an extra or missing relation are not listed apart from it.
func Compare(want, got Shape) []Difference {
	var diffs []Difference
	for k, o := range got.objects {
		w, ok := want.objects[k]
		if !ok {
			if !partOf(o, got, want) {
				diffs = append(diffs, Difference{Change: Extra, Object: o})
			}
			continue
		}
		if fields := changedFields(w.Fields, o.Fields); len(fields) > 0 {
			diffs = append(diffs, Difference{Change: Changed, Object: o, Fields: fields})
		}
	}
	for k, w := range want.objects {
		if _, ok := got.objects[k]; !ok && !partOf(w, want, got) {
			diffs = append(diffs, Difference{Change: Missing, Object: w})
		}
	}
	slices.SortFunc(diffs, func(a, b Difference) int {
		if a.Planted() != b.Planted() {
			if a.Planted() {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Object.key(), b.Object.key())
	})
	return diffs
}

// relationKinds are the kinds of object whose columns and constraints are objects of their own, named
// "relation.column".
var relationKinds = []string{"table", "partitioned table", "view", "materialized view", "foreign table"}

// partOf says o is a column or constraint of a relation that in has and other has not: said once, with
// the relation. Code (a trigger, a rule, a policy) is always said on its own.
func partOf(o SchemaObject, in, other Shape) bool {
	rel, found := relationOf(o.Name)
	if o.Code || !found || (o.Kind != "column" && o.Kind != "constraint") {
		return false
	}
	for _, kind := range relationKinds {
		k := kind + " " + rel
		if _, ok := in.objects[k]; ok {
			_, elsewhere := other.objects[k]
			return !elsewhere
		}
	}
	return false
}

// relationOf is the relation part of a name "relation.column", each part an identifier quoted where it
// needs it (a quoted one may hold dots, and doubled quotes).
func relationOf(name string) (string, bool) {
	if !strings.HasPrefix(name, `"`) {
		rel, _, found := strings.Cut(name, ".")
		return rel, found
	}
	for i := 1; i < len(name); i++ {
		if name[i] != '"' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '"' {
			i++ // a doubled quote inside the identifier
			continue
		}
		return name[:i+1], i+1 < len(name) && name[i+1] == '.'
	}
	return "", false
}

// changedFields are the fields whose values differ, in want's order; a field only one side has counts
// as empty on the other.
func changedFields(want, got []Field) []FieldChange {
	values := map[string]string{}
	for _, f := range got {
		values[f.Name] = f.Value
	}
	var changes []FieldChange
	seen := map[string]bool{}
	for _, f := range want {
		seen[f.Name] = true
		if g := values[f.Name]; g != f.Value {
			changes = append(changes, FieldChange{Name: f.Name, Want: f.Value, Got: g})
		}
	}
	for _, f := range got {
		if !seen[f.Name] && f.Value != "" {
			changes = append(changes, FieldChange{Name: f.Name, Got: f.Value})
		}
	}
	return changes
}

// ReleaseShape is the shape the migrations of fsys give a new schema on this database. They are applied
// to a scratch schema (Options.Scratch: a role, and the schema it owns, of the same name) as a tenant's
// are, its catalog is read, and both are dropped. The scratch role logs in itself for this, with a
// password only this process knows, and no other login is a member of it (any that was is revoked
// first): no tenant's code running on the operator's tenant login, or on any app's, can act as it and
// plant what the release would then seem to make; a shape holding an object that the scratch role does
// not own is refused. The result is kept for release, the key the caller gives these migrations: the
// next call for it sends no SQL. Calls for one DB take turns; a caller waits for its turn only as long
// as its context lasts. A scratch schema that cannot be dropped (a lock held on it) stays until the
// next call, which drops it first; the shape read is kept.
func (db *DB) ReleaseShape(ctx context.Context, fsys fs.FS, release string) (Shape, error) {
	select {
	case db.shapeTurn <- struct{}{}:
		defer func() { <-db.shapeTurn }()
	case <-ctx.Done():
		return Shape{}, ctx.Err()
	}
	if s, ok := db.shapes[release]; ok {
		return s, nil
	}
	scratch := db.opts.Scratch
	if scratch.Name == "" {
		return Shape{}, fmt.Errorf("no scratch schema to read the release's shape in: %w", ErrNoTenantLogin)
	}
	// One left by an operator stopped halfway, or not dropped last time, goes first: the release's
	// migrations start from nothing.
	if err := db.dropScratch(ctx, scratch); err != nil {
		return Shape{}, fmt.Errorf("dropping the scratch schema left from before: %w", err)
	}
	if err := db.EnsureSchema(ctx, scratch.Name, scratch); err != nil {
		return Shape{}, err
	}
	shape, err := db.migrateScratch(ctx, scratch, fsys, release)
	_ = db.dropScratch(context.WithoutCancel(ctx), scratch) // or at the next call
	if err != nil {
		return Shape{}, err
	}
	for _, o := range shape.objects {
		for _, f := range o.Fields {
			if f.Name == "owner" && f.Value != "<tenant>" {
				return Shape{}, fmt.Errorf("the scratch schema of the release's shape holds %s %s, owned by %s: not what the "+
					"release's migrations made", o.Kind, o.Name, f.Value)
			}
		}
	}
	if db.shapes == nil {
		db.shapes = map[string]Shape{}
	}
	db.shapes[release] = shape
	return shape, nil
}

// migrateScratch applies the migrations to the scratch schema, as its own login, and reads its shape.
func (db *DB) migrateScratch(ctx context.Context, scratch Role, fsys fs.FS, release string) (Shape, error) {
	session, done, err := db.scratchSession(ctx, scratch)
	if err != nil {
		return Shape{}, err
	}
	defer done()
	if _, err := session.Migrate(ctx, fsys, "shape/"+release+"/"+randomPassword()); err != nil {
		return Shape{}, fmt.Errorf("migrating the scratch schema for the release's shape: %w", err)
	}
	return session.Shape(ctx)
}

// scratchSession lets the scratch role log in, with a new random password, and returns a session on a
// connection of its own, and what closes it and takes the login away again.
func (db *DB) scratchSession(ctx context.Context, scratch Role) (*TenantSession, func(), error) {
	citus, err := db.Citus(ctx)
	if err != nil {
		return nil, nil, err
	}
	password := randomPassword()
	clause, err := passwordClause(password)
	if err != nil {
		return nil, nil, err
	}
	q := pgx.Identifier{scratch.Name}.Sanitize()
	if err := db.RevokeMembers(ctx, scratch.Name); err != nil { // no login but its own acts as it
		return nil, nil, err
	}
	closeLogin := func() { _, _ = db.pool.Exec(context.WithoutCancel(ctx), "ALTER ROLE "+q+" NOLOGIN PASSWORD NULL") }
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" LOGIN NOINHERIT "+clause); err != nil {
		return nil, nil, fmt.Errorf("letting the scratch role %q log in: %w", scratch.Name, err)
	}
	// On Citus it logs in to the coordinator as the app logins do (AppsGroup), and the coordinator to
	// the workers as it, with the same password.
	if citus {
		if err := db.citusLoginWith(ctx, scratch.Name, password); err != nil {
			closeLogin()
			return nil, nil, err
		}
		if err := db.joinAppsGroup(ctx, scratch.Name); err != nil {
			closeLogin()
			return nil, nil, err
		}
	}
	cfg := db.pool.Config()
	cfg.ConnConfig.User, cfg.ConnConfig.Password = scratch.Name, password
	pool, err := db.newPoolFrom(cfg, poolSettings{maxConns: 1, mode: pgx.QueryExecModeExec, opts: db.opts})
	if err != nil {
		closeLogin()
		return nil, nil, err
	}
	if err := db.EnsureRegistry(ctx); err != nil {
		pool.Close()
		closeLogin()
		return nil, nil, err
	}
	db.mu.Lock()
	secret := db.migrationSecret
	db.mu.Unlock()
	session := &TenantSession{pool: pool, id: Identity{Schema: scratch.Name, Role: scratch.Name}, citus: citus, secret: secret}
	return session, func() { pool.Close(); closeLogin() }, nil
}

// dropScratch drops the scratch schema and its role, if they are the operator's: the role carries its
// mark, and the schema, if there is one, belongs to it. Whatever was granted to the role goes first
// (DROP OWNED): a grant that a tenant made to it must not keep it from going. It is one transaction
// that waits two seconds at most for a lock; a role that cannot be dropped is an error, not left
// behind.
func (db *DB) dropScratch(ctx context.Context, scratch Role) error {
	ours, err := db.marked(ctx, scratch)
	if err != nil || !ours {
		return err
	}
	var owner *string
	if err := db.pool.QueryRow(ctx, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", scratch.Name).Scan(&owner); err != nil &&
		!errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("looking up the scratch schema %q: %w", scratch.Name, err)
	}
	q := pgx.Identifier{scratch.Name}.Sanitize()
	if owner != nil && *owner != q && *owner != scratch.Name {
		return &OwnershipError{What: "schema", Name: scratch.Name}
	}
	citus, err := db.Citus(ctx)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 2000"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP OWNED BY "+q+" CASCADE"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+q+" CASCADE"); err != nil {
			return err
		}
		if citus {
			if _, err := tx.Exec(ctx, `DELETE FROM pg_catalog.pg_dist_authinfo WHERE rolename = $1`, scratch.Name); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "DROP ROLE "+q)
		return err
	})
	if err != nil {
		return fmt.Errorf("dropping the scratch schema and role %q: %w", scratch.Name, err)
	}
	return nil
}

// repairOrder is the order in which missing objects are made again: what the others use first.
var repairOrder = []string{"function", "procedure", "column", "constraint", "index", "view", "rule", "trigger"}

// Repair makes again the objects of the release that the schema is missing (the Missing differences
// Compare found), with the statements the release's own schema gives (SchemaObject.Create), on the
// tenant session and in one transaction: if one fails, none is made. A schema holding planted code is
// not repaired: a trigger or default made again could call it. Nothing is dropped or altered:
// extra and changed objects are left for a person to judge. It returns what it made, and what it cannot
// make again (a whole table, whose data only a backup holds).
func (s *TenantSession) Repair(ctx context.Context, diffs []Difference) (made, left []string, err error) {
	for _, d := range diffs {
		if d.Planted() {
			return nil, nil, fmt.Errorf("the schema holds code the release does not have (%s %s): remove it first; "+
				"what is made again could run it", d.Object.Kind, d.Object.Name)
		}
	}
	var todo []SchemaObject
	for _, d := range diffs {
		if d.Change != Missing {
			continue
		}
		o := d.Object
		// A statement that names the release's scratch role cannot be made to name the tenant's.
		if o.Create == "" || strings.Contains(o.Create, "<tenant>") {
			left = append(left, o.Kind+" "+o.Name)
			continue
		}
		o.Create = strings.ReplaceAll(o.Create, "<schema>", pgx.Identifier{s.id.Schema}.Sanitize())
		todo = append(todo, o)
	}
	rank := func(o SchemaObject) int {
		r := slices.Index(repairOrder, o.Kind) * 2
		if o.Kind == "constraint" && strings.Contains(o.Create, " FOREIGN KEY ") {
			r++ // after the keys it refers to
		}
		return r
	}
	slices.SortStableFunc(todo, func(a, b SchemaObject) int { return rank(a) - rank(b) })
	if len(todo) == 0 {
		return nil, left, nil
	}
	// Every name of the schema is qualified in the statements; built-ins come first on the search_path
	// for the rest (a function body is checked against it).
	err = s.inTxOn(ctx, "pg_catalog, "+pgx.Identifier{s.id.Schema}.Sanitize()+", pg_temp", true, func(tx pgx.Tx) error {
		for _, o := range todo {
			if _, err := tx.Exec(ctx, o.Create); err != nil {
				return fmt.Errorf("making %s %s again: %w", o.Kind, o.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, left, fmt.Errorf("repairing schema %s (nothing was changed): %w", s.id.Schema, err)
	}
	for _, o := range todo {
		made = append(made, o.Kind+" "+o.Name)
	}
	return made, left, nil
}
