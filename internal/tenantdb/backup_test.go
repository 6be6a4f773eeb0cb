package tenantdb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/test/utils/tenantdata"
)

// A snapshot of one schema, loaded into another made by the same migrations, holds every row of every
// table as it was, with the migrations' foreign keys and indexes, made after the rows; the sequences go
// on from where they were; a second load finds rows and stops; a load that fails leaves nothing.
func TestTenantSession_SnapshotLoad(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	src, dst := "tenant_snap_src", "tenant_snap_dst"
	newTenantSchema(t, db, src)
	newTenantSchema(t, db, dst)
	from, to := sessionOf(t, db, src, src), sessionOf(t, db, dst, dst)
	if _, err := from.Migrate(ctx, migrations.FS(), "test"); err != nil {
		t.Fatal(err)
	}
	if v, err := to.MigrateTo(ctx, migrations.FS(), "test", migrations.Latest); err != nil || v != migrations.Latest {
		t.Fatalf("MigrateTo = %d, %v", v, err)
	}
	must(t, tenantdata.Fill(ctx, db.pool, src))

	data := map[string][]byte{}
	var snap *Snapshot
	must(t, from.Snapshot(ctx, func(sn *Snapshot) error {
		snap = sn
		for _, tb := range sn.Tables {
			var buf bytes.Buffer
			if _, err := sn.CopyOut(ctx, tb, &buf); err != nil {
				return err
			}
			data[tb.Name] = buf.Bytes()
		}
		return nil
	}))
	names := []string{}
	for _, tb := range snap.Tables {
		names = append(names, tb.Name)
	}
	if !slices.Equal(names, tenantdata.Tables) {
		t.Fatalf("snapshot tables %v, want %v", names, tenantdata.Tables)
	}
	if snap.Version != migrations.Latest {
		t.Fatalf("snapshot version %d, want %d", snap.Version, migrations.Latest)
	}
	// As many rows as a large tenant has, so that the load makes foreign keys and indexes afterwards.
	tables := slices.Clone(snap.Tables)
	for i := range tables {
		tables[i].Rows = DeferIndexesFrom
	}
	load := func() (LoadResult, error) {
		return to.Load(ctx, tables, snap.Sequences, func(ctx context.Context, tb CopyTable, copyIn func(io.Reader) (int64, error)) error {
			_, err := copyIn(bytes.NewReader(data[tb.Name]))
			return err
		})
	}
	res, err := load()
	must(t, err)
	if res.Rows != tenantdata.Rows || len(res.Skipped) != 0 {
		t.Fatalf("loaded %+v", res)
	}
	for _, tb := range names {
		if a, b := dump(t, db, src, tb), dump(t, db, dst, tb); !slices.Equal(a, b) || len(a) == 0 {
			t.Errorf("table %s: source %d rows, loaded %d rows, or they differ", tb, len(a), len(b))
		}
	}
	// The foreign keys and indexes the load made again are the migrations' own.
	srcShape, err := from.Shape(ctx)
	must(t, err)
	dstShape, err := to.Shape(ctx)
	must(t, err)
	if srcShape.Fingerprint() != dstShape.Fingerprint() || srcShape.Len() == 0 {
		t.Fatalf("after the load the schema's shape differs from the source's (%d and %d objects)", srcShape.Len(), dstShape.Len())
	}
	// The sequences go on: a new department gets the next id, not one taken.
	var id int64
	must(t, db.pool.QueryRow(ctx, "INSERT INTO "+pgx.Identifier{dst, "departments"}.Sanitize()+" (name) VALUES ('New') RETURNING id").Scan(&id))
	if id != 4 {
		t.Fatalf("a new department after the load got id %d, want 4", id)
	}
	if _, err := load(); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second load: %v, want ErrNotEmpty", err)
	}
	// A load that fails midway leaves nothing: the expenses' stream breaks after the other tables.
	must(t, to.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "TRUNCATE departments, funding_accounts, budgets, users, expenses, sessions, api_tokens")
		return err
	}))
	_, err = to.Load(ctx, snap.Tables, nil, func(ctx context.Context, tb CopyTable, copyIn func(io.Reader) (int64, error)) error {
		if tb.Name == "expenses" {
			_, err := copyIn(io.MultiReader(bytes.NewReader(data[tb.Name][:100]), errReader{}))
			return err
		}
		_, err := copyIn(bytes.NewReader(data[tb.Name]))
		return err
	})
	if err == nil {
		t.Fatal("a load whose stream broke succeeded")
	}
	for _, tb := range names {
		if rows := dump(t, db, dst, tb); len(rows) != 0 {
			t.Errorf("after a failed load, table %s holds %d rows", tb, len(rows))
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("the store went away") }

// dump is a table's rows as text, in order.
func dump(t *testing.T, db *DB, schema, table string) []string {
	t.Helper()
	rows, err := tenantdata.Dump(context.Background(), db.pool, schema, table)
	must(t, err)
	return rows
}

func TestCloneTables(t *testing.T) {
	all := []CopyTable{{Name: "api_tokens", References: []string{"users"}}, {Name: "budgets", References: []string{"departments", "funding_accounts"}},
		{Name: "departments"}, {Name: "expenses", References: []string{"budgets", "users"}}, {Name: "funding_accounts"},
		{Name: "notes", References: []string{"expenses"}}, {Name: "users", References: []string{"departments"}}}
	people := []string{"users", "sessions", "api_tokens"}
	names := func(ts []CopyTable) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	for _, tc := range []struct {
		asked []string
		want  []string
		err   string
	}{
		{asked: nil, want: []string{"budgets", "departments", "funding_accounts"}},
		{asked: []string{"departments", "funding_accounts"}, want: []string{"departments", "funding_accounts"}},
		{asked: []string{"budgets"}, err: "budgets refers to departments, which is not in tables"},
		{asked: []string{"notes"}, err: "notes refers to expenses: expenses refers to users: users holds people"},
		{asked: []string{"users"}, err: "users holds people or their credentials, which a clone never copies"},
		{asked: []string{"nope"}, err: `the source has no table "nope"`},
	} {
		got, err := CloneTables(all, people, tc.asked)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("CloneTables(%v) = %v, %v; want an error with %q", tc.asked, names(got), err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(names(got), tc.want) {
			t.Errorf("CloneTables(%v) = %v, %v; want %v", tc.asked, names(got), err, tc.want)
		}
	}
}
