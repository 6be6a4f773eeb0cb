package tenantdb

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app/migrations"
)

// withScratch is Options with the scratch role of ReleaseShape, marked as the operator marks it.
func withScratch(name string) Options {
	return Options{Scratch: Role{Name: name, Mark: OwnerMark("shape", "test", "test", name)}}
}

// migratedTenant is a new tenant schema at the release's version.
func migratedTenant(t *testing.T, db *DB, schema string) *TenantSession {
	t.Helper()
	newTenantSchema(t, db, schema)
	s := sessionOf(t, db, schema, schema)
	if _, err := s.Migrate(context.Background(), migrations.FS(), "test"); err != nil {
		t.Fatal(err)
	}
	return s
}

// The release's shape is read from a scratch schema, once, and matches every tenant migrated by it;
// each kind of hand-made change to one tenant is found and said in plain words, the code among them
// called planted, and the other tenant stays unchanged.
func TestTenantSession_Shape_drift(t *testing.T) {
	db, adminURL := openTestDB(t, withScratch("tenantry_shape_test"))
	ctx := context.Background()
	release, err := db.ReleaseShape(ctx, migrations.FS(), "v2")
	must(t, err)
	if release.Len() < 50 {
		t.Fatalf("the release's shape holds %d objects, want the tables, columns, indexes... of the migrations", release.Len())
	}
	var scratchLeft bool
	must(t, db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'tenantry_shape_test')
		OR EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantry_shape_test')`).Scan(&scratchLeft))
	if scratchLeft {
		t.Fatal("the scratch schema or its role is still there after the release's shape was read")
	}
	before := db.Statements()
	if again, err := db.ReleaseShape(ctx, migrations.FS(), "v2"); err != nil || again.Fingerprint() != release.Fingerprint() {
		t.Fatalf("the release's shape read again: %v, fingerprint changed: %t", err, again.Fingerprint() != release.Fingerprint())
	}
	if sent := db.Statements() - before; sent != 0 {
		t.Fatalf("the release's shape read again sent %d statements, want 0 (kept)", sent)
	}

	a, b := migratedTenant(t, db, "tenant_drift_a"), migratedTenant(t, db, "tenant_drift_b")
	for _, s := range []*TenantSession{a, b} {
		got, err := s.Shape(ctx)
		must(t, err)
		if d := Compare(release, got); len(d) != 0 {
			t.Fatalf("a schema just migrated differs from the release: %v", d)
		}
		if got.Fingerprint() != release.Fingerprint() {
			t.Fatal("a schema just migrated has another fingerprint than the release")
		}
	}

	// The digest stays while nothing changes, and tells schemas apart.
	shapeA, err := a.Shape(ctx)
	must(t, err)
	digestA, err := a.ShapeDigest(ctx)
	must(t, err)
	digestB, err := b.ShapeDigest(ctx)
	must(t, err)
	if digestA == "" || digestA != shapeA.Digest || digestA == digestB {
		t.Fatalf("digests: %q read alone, %q with the shape, %q for the other schema", digestA, shapeA.Digest, digestB)
	}

	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	// What a DBA's hot fix, or an app login acting as the tenant, could leave behind.
	_, err = conn.Exec(ctx, `BEGIN; SET LOCAL ROLE tenant_drift_a; SET LOCAL search_path = tenant_drift_a;
ALTER TABLE expenses ADD COLUMN hotfix text;
DROP INDEX expenses_spent_on_idx;
ALTER TABLE expenses DROP CONSTRAINT expenses_amount_minor_check;
ALTER TABLE budgets DROP CONSTRAINT budgets_account_id_fkey;
ALTER TABLE expenses ALTER COLUMN note SET DEFAULT 'n/a';
CREATE FUNCTION copy_out() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER copy_out AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION copy_out();
CREATE VIEW everything AS SELECT email, password_hash FROM users;
GRANT SELECT ON users TO PUBLIC;
-- A decoy named like the schema's own table, qualified: it must not stand in for it.
CREATE TABLE "tenant_drift_a.expenses" (amount_minor bigint CONSTRAINT expenses_amount_minor_check CHECK (amount_minor > 0));
COMMIT`)
	must(t, err)
	got, err := a.Shape(ctx)
	must(t, err)
	if again, err := a.ShapeDigest(ctx); err != nil || again == digestA || again != got.Digest {
		t.Fatalf("the digest after the changes: %q (%v), before %q, with the shape %q", again, err, digestA, got.Digest)
	}
	diffs := Compare(release, got)
	var said []string
	planted := 0
	for _, d := range diffs {
		said = append(said, d.String())
		if d.Planted() {
			planted++
		}
	}
	want := []string{
		"planted function copy_out() (code the release does not have)",
		"planted trigger users.copy_out (code the release does not have): CREATE TRIGGER copy_out AFTER INSERT ON <schema>.users FOR EACH ROW EXECUTE FUNCTION <schema>.copy_out()",
		"planted view everything (code the release does not have): SELECT users.email, users.password_hash FROM <schema>.users;",
		"extra column expenses.hotfix: text",
		"changed column expenses.note: default 'n/a'::text, not ''::text",
		"missing constraint budgets.budgets_account_id_fkey",
		"missing constraint expenses.expenses_amount_minor_check",
		"missing index expenses_spent_on_idx",
		`extra table "<schema>.expenses"`,
		"changed table users: grants {<tenant>=arwdDxt/<tenant>,=r/<tenant>}, not none",
	}
	if !slices.Equal(said, want) {
		t.Fatalf("differences:\n  %s\nwant:\n  %s", strings.Join(said, "\n  "), strings.Join(want, "\n  "))
	}
	if planted != 3 {
		t.Fatalf("%d planted, want 3 (function, trigger, view)", planted)
	}
	if got.Fingerprint() == release.Fingerprint() {
		t.Fatal("a drifted schema has the release's fingerprint")
	}

	// The opt-in repair refuses while planted code is there (what it makes could call it); once that is
	// removed, it makes the missing objects again, and nothing else.
	if _, _, err := a.Repair(ctx, diffs); err == nil || !strings.Contains(err.Error(), "remove it first") {
		t.Fatalf("repair with planted code: %v", err)
	}
	_, err = conn.Exec(ctx, `BEGIN; SET LOCAL ROLE tenant_drift_a; SET LOCAL search_path = tenant_drift_a;
DROP TRIGGER copy_out ON users; DROP FUNCTION copy_out(); DROP VIEW everything; COMMIT`)
	must(t, err)
	got, err = a.Shape(ctx)
	must(t, err)
	diffs = Compare(release, got)
	made, left, err := a.Repair(ctx, diffs)
	must(t, err)
	if want := []string{"constraint expenses.expenses_amount_minor_check", "constraint budgets.budgets_account_id_fkey",
		"index expenses_spent_on_idx"}; !slices.Equal(made, want) || len(left) != 0 {
		t.Fatalf("repair made %v and left %v, want %v and nothing left", made, left, want)
	}
	got, err = a.Shape(ctx)
	must(t, err)
	if after := Compare(release, got); len(after) != len(diffs)-len(made) {
		t.Fatalf("after the repair: %v, want the %d differences that were not missing", after, len(diffs)-len(made))
	}
	for _, d := range Compare(release, got) {
		if d.Change == Missing {
			t.Fatalf("still missing after the repair: %s", d)
		}
	}
	var notes string
	must(t, conn.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'budgets_account_id_fkey'
		AND connamespace = 'tenant_drift_a'::regnamespace`).Scan(&notes))
	if notes != "FOREIGN KEY (account_id) REFERENCES tenant_drift_a.funding_accounts(id)" {
		t.Fatalf("the foreign key made again: %q", notes)
	}

	other, err := b.Shape(ctx)
	must(t, err)
	if d := Compare(release, other); len(d) != 0 {
		t.Fatalf("the other tenant differs from the release after the first was changed: %v", d)
	}
}

// Every change the comparison can see changes the digest: a grant, a trigger enabled or disabled, a
// default, a sequence's settings, a policy, a function's body, an index marked invalid. A kind
// of object the digest does not cover (a collation) makes it empty: only a full read can tell then.
func TestTenantSession_ShapeDigest_changes(t *testing.T) {
	db, adminURL := openTestDB(t, Options{})
	ctx := context.Background()
	s := migratedTenant(t, db, "tenant_digest")
	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `BEGIN; SET LOCAL ROLE tenant_digest; SET LOCAL search_path = tenant_digest;
CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f();
COMMIT`)
	must(t, err)
	for _, change := range []string{
		"GRANT SELECT ON users TO PUBLIC",
		"ALTER TABLE users DISABLE TRIGGER t",
		"ALTER TABLE expenses ALTER COLUMN note SET DEFAULT 'x'",
		"ALTER SEQUENCE expenses_id_seq INCREMENT BY 2",
		"ALTER TABLE users ENABLE ROW LEVEL SECURITY",
		"CREATE POLICY p ON users USING (true)",
		"CREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
		"UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'tenant_digest.expenses_spent_on_idx'::regclass",
		"CREATE COLLATION c (locale = 'C')",
	} {
		before, err := s.ShapeDigest(ctx)
		must(t, err)
		role := "SET LOCAL ROLE tenant_digest; "
		if strings.HasPrefix(change, "UPDATE pg_index") {
			role = "" // an index left invalid, as a failed CREATE INDEX CONCURRENTLY leaves it
		}
		_, err = conn.Exec(ctx, "BEGIN; "+role+"SET LOCAL search_path = tenant_digest; "+change+"; COMMIT")
		must(t, err)
		after, err := s.ShapeDigest(ctx)
		must(t, err)
		if after == before {
			t.Errorf("%s: the digest did not change (%q)", change, after)
		}
		if strings.HasPrefix(change, "CREATE COLLATION") != (after == "") {
			t.Errorf("%s: digest %q", change, after)
		}
	}
}

// A scratch schema left behind (an operator stopped halfway), with a grant a tenant made to its role
// (which would keep DROP ROLE from working), is dropped before the next release's shape is read, and
// that one's is dropped after it: neither role nor schema remains.
func TestDB_ReleaseShape_dropsWhatWasLeft(t *testing.T) {
	opts := withScratch("tenantry_shape_left")
	db, adminURL := openTestDB(t, opts)
	ctx := context.Background()
	migratedTenant(t, db, "tenant_granting")
	must(t, db.EnsureSchema(ctx, opts.Scratch.Name, opts.Scratch))
	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `BEGIN; SET LOCAL ROLE tenant_granting; GRANT SELECT ON tenant_granting.users TO tenantry_shape_left; COMMIT`)
	must(t, err)
	if _, err := db.ReleaseShape(ctx, migrations.FS(), "v2"); err != nil {
		t.Fatal(err)
	}
	var left bool
	must(t, conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'tenantry_shape_left')
		OR EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantry_shape_left')`).Scan(&left))
	if left {
		t.Fatal("the scratch schema or role is still there")
	}
}

func TestRelationOf(t *testing.T) {
	for name, want := range map[string]string{
		"expenses.note": "expenses", `"<schema>.expenses".amount_minor`: `"<schema>.expenses"`,
		`"a""b.c".d`: `"a""b.c"`, "plain": "",
	} {
		if got, ok := relationOf(name); got != want && (ok || want != "") {
			t.Errorf("relationOf(%q) = %q, %t; want %q", name, got, ok, want)
		}
	}
}

// A batch of digests, read in one statement on the operator's tenant login acting as no tenant, is
// each schema's own (as its session reads it, "" where the digest cannot tell, or the schema is gone).
func TestDB_ShapeDigests(t *testing.T) {
	db, adminURL := openTestDB(t, Options{})
	ctx := context.Background()
	sessions := map[string]*TenantSession{}
	for _, name := range []string{"tenant_batch_a", "tenant_batch_b", "tenant_batch_c"} {
		sessions[name] = migratedTenant(t, db, name)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `BEGIN; SET LOCAL ROLE tenant_batch_b; SET LOCAL search_path = tenant_batch_b;
ALTER TABLE users ADD COLUMN nickname text; CREATE COLLATION c (locale = 'C'); COMMIT`)
	must(t, err)
	digests, err := db.ShapeDigests(ctx, []string{"tenant_batch_c", "tenant_batch_a", "tenant_batch_b"})
	must(t, err)
	if len(digests) != 3 || digests["tenant_batch_b"] != "" || digests["tenant_batch_a"] == "" ||
		digests["tenant_batch_a"] == digests["tenant_batch_c"] {
		t.Fatalf("digests %v: want a's and c's, different, and none for b (a collation)", digests)
	}
	for name, s := range sessions {
		own, err := s.ShapeDigest(ctx)
		must(t, err)
		if digests[name] != own {
			t.Errorf("%s: the batch read %q, its session %q", name, digests[name], own)
		}
	}
	_, err = conn.Exec(ctx, `DROP SCHEMA tenant_batch_c CASCADE`)
	must(t, err)
	again, err := db.ShapeDigests(ctx, []string{"tenant_batch_a", "tenant_batch_c"})
	must(t, err)
	if len(again) != 2 || again["tenant_batch_a"] != digests["tenant_batch_a"] || again["tenant_batch_c"] != "" {
		t.Errorf("after c was dropped: %v", again)
	}
}
