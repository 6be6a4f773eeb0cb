package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A tenant's data leaves and enters its schema as COPY streams, on the tenant session: a Snapshot reads
// every table in one REPEATABLE READ transaction acting as the tenant, and Load writes them into a
// schema its migrations made, in one transaction that commits whole or leaves nothing. Neither runs
// anything with more than the tenant's rights: COPY TO runs none of the tenant's code but its
// row-level security (as the tenant), and COPY FROM runs its triggers and checks (as the tenant).

// BulkTimeout bounds each statement of a snapshot or a load (a COPY of one table), where the sessions'
// own statement timeout is too short for a large tenant.
const BulkTimeout = time.Hour

// CopyTable is one table of a tenant's schema as a copy of its data sees it: its name and the columns
// COPY reads and writes, in order (generated columns, which COPY cannot write, are left out).
type CopyTable struct {
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	// References are the tables of the same schema its foreign keys refer to.
	References []string `json:"references,omitempty"`
	// Rows is how many rows are expected: a backup's count, or a snapshot's estimate from the table's
	// statistics and size. Load builds indexes after the rows when there are many (DeferIndexesFrom).
	Rows int64 `json:"rows,omitempty"`
}

// DeferIndexesFrom is the number of rows from which Load makes foreign keys and indexes after the rows
// rather than before: below it, dropping and making them again costs more than it saves.
const DeferIndexesFrom = 20000

func (t CopyTable) copySQL(schema, direction string) string {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	return "COPY " + pgx.Identifier{schema, t.Name}.Sanitize() + " (" + strings.Join(cols, ", ") + ") " + direction
}

// Snapshot is one consistent read of a tenant's schema: every table copied through it shows the same
// moment.
type Snapshot struct {
	tx     pgx.Tx
	schema string
	// Version is the schema's version (its version table's newest applied migration) in the snapshot.
	Version int64
	// Tables are the schema's tables other than the version table, in name order.
	Tables []CopyTable
	// Sequences are the schema's sequences' last values (sequences are not transactional: a value may
	// be ahead of the snapshot's rows, never behind).
	Sequences []Sequence
}

// CopyOut writes a table's rows to w in COPY's text format, and returns how many there were.
func (sn *Snapshot) CopyOut(ctx context.Context, t CopyTable, w io.Writer) (int64, error) {
	tag, err := sn.tx.Conn().PgConn().CopyTo(ctx, w, t.copySQL(sn.schema, "TO STDOUT"))
	if err != nil {
		return 0, fmt.Errorf("copying table %s of %s: %w", t.Name, sn.schema, err)
	}
	return tag.RowsAffected(), nil
}

// Snapshot runs fn on one REPEATABLE READ, READ ONLY transaction acting as the tenant, which sees the
// schema as it was when the transaction began. The transaction reads the catalog and the version
// table with pg_catalog alone on its search_path, and names every table in full.
func (s *TenantSession) Snapshot(ctx context.Context, fn func(*Snapshot) error) error {
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := s.inTxWith(ctx, opts, "pg_catalog", true, func(tx pgx.Tx) error {
		if err := setBulkTimeout(ctx, tx); err != nil {
			return err
		}
		sn := &Snapshot{tx: tx, schema: s.id.Schema}
		// The version table as any relation, as Version reads it: in place of it the tenant may have put
		// a view, which runs as the tenant.
		var hasVersion bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2)`, s.id.Schema, VersionTable).Scan(&hasVersion); err != nil {
			return err
		}
		if !hasVersion {
			return fmt.Errorf("schema %s has no version table (%s): it was never migrated, or changed by hand", s.id.Schema, VersionTable)
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+pgx.Identifier{s.id.Schema, VersionTable}.Sanitize()+
			" WHERE is_applied").Scan(&sn.Version); err != nil {
			return err
		}
		var err error
		if sn.Tables, err = copyTables(ctx, tx, s.id.Schema); err != nil {
			return err
		}
		// Each sequence with the table that owns it (an identity or serial column's), if one does.
		rows, _ := tx.Query(ctx, `SELECT s.sequencename::text, s.last_value,
       coalesce((SELECT t.relname::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') LIMIT 1), '')
FROM pg_catalog.pg_sequences s
JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
WHERE s.schemaname = $1 AND s.last_value IS NOT NULL ORDER BY 1`, s.id.Schema)
		if sn.Sequences, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Sequence, error) {
			var seq Sequence
			err := row.Scan(&seq.Name, &seq.Value, &seq.Table)
			return seq, err
		}); err != nil {
			return err
		}
		return fn(sn)
	})
	if err != nil {
		return fmt.Errorf("reading a snapshot of %s: %w", s.id.Schema, err)
	}
	return nil
}

// copyTables lists the ordinary tables of a schema other than the version table, with the columns a
// COPY of their data takes, in name order.
func copyTables(ctx context.Context, tx pgx.Tx, schema string) ([]CopyTable, error) {
	rows, _ := tx.Query(ctx, `
SELECT c.relname::text,
       array(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attnum),
       array(SELECT DISTINCT r.relname::text FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class r ON r.oid = k.confrelid
             WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid AND r.relnamespace = c.relnamespace
             ORDER BY 1),
       greatest(c.reltuples, pg_catalog.pg_relation_size(c.oid) / 8192 * 50)::bigint
FROM pg_catalog.pg_class c
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
  AND c.relkind = 'r' AND NOT c.relispartition AND c.relname <> $2
ORDER BY c.relname COLLATE "C"`, schema, VersionTable)
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CopyTable, error) {
		var t CopyTable
		err := row.Scan(&t.Name, &t.Columns, &t.References, &t.Rows)
		if len(t.References) == 0 {
			t.References = nil
		}
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the tables of %s: %w", schema, err)
	}
	return tables, nil
}

func setBulkTimeout(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('statement_timeout', $1, true)", fmt.Sprint(BulkTimeout.Milliseconds()))
	return err
}

// ErrNotEmpty says a Load found rows already in the schema: it was loaded before.
var ErrNotEmpty = errors.New("the schema already holds rows")

// LoadResult is what a Load wrote.
type LoadResult struct {
	// Rows is the number of rows written, over every table.
	Rows int64
	// Skipped are the tables given that the schema does not have (made by hand in the schema the data
	// came from); their rows were not written.
	Skipped []string
}

// Fill writes one table's rows: it calls copyIn once with the table's rows in COPY's text format, and
// checks what it wrote (copyIn returns the number of rows). An error undoes the whole Load.
type Fill func(ctx context.Context, t CopyTable, copyIn func(io.Reader) (int64, error)) error

// Load writes tables into the tenant's schema, which its migrations made and which holds no rows yet,
// in one transaction acting as the tenant, and sets its sequences: all of it commits, or none. Tables
// go in the order of their foreign keys (referenced first), as the schema's catalog has them. With
// many rows (DeferIndexesFrom), as pg_restore does, the foreign keys and the indexes that back no
// constraint are made after the rows are in: dropped first, and made again from their own definitions, in the same transaction (a check
// of each foreign key over the whole table, and an index built at once, rather than row by row). A
// schema that already holds rows in one of the tables is left alone (ErrNotEmpty). The transaction
// has pg_catalog alone on its search_path, and names every table in full.
func (s *TenantSession) Load(ctx context.Context, tables []CopyTable, seqs []Sequence, fill Fill) (LoadResult, error) {
	var res LoadResult
	err := s.inTxOn(ctx, "pg_catalog", true, func(tx pgx.Tx) error {
		if err := setBulkTimeout(ctx, tx); err != nil {
			return err
		}
		order, err := loadOrder(ctx, tx, s.id.Schema)
		if err != nil {
			return err
		}
		if len(order) > 0 {
			checks := make([]string, len(order))
			for i, name := range order {
				checks[i] = "(SELECT " + quoteLiteral(name) + " FROM " + pgx.Identifier{s.id.Schema, name}.Sanitize() + " LIMIT 1)"
			}
			var full *string
			if err := tx.QueryRow(ctx, "SELECT coalesce("+strings.Join(checks, ", ")+")").Scan(&full); err != nil {
				return err
			}
			if full != nil {
				return fmt.Errorf("table %s: %w", *full, ErrNotEmpty)
			}
		}
		var rows int64
		for _, t := range tables {
			rows += t.Rows
		}
		var later []string
		if rows >= DeferIndexesFrom {
			if later, err = deferIndexes(ctx, tx, s.id.Schema); err != nil {
				return err
			}
		}
		given := map[string]CopyTable{}
		for _, t := range tables {
			given[t.Name] = t
		}
		for _, name := range order {
			t, ok := given[name]
			if !ok {
				continue
			}
			delete(given, name)
			err := fill(ctx, t, func(r io.Reader) (int64, error) {
				tag, err := tx.Conn().PgConn().CopyFrom(ctx, r, t.copySQL(s.id.Schema, "FROM STDIN"))
				res.Rows += tag.RowsAffected()
				return tag.RowsAffected(), err
			})
			if err != nil {
				return fmt.Errorf("table %s: %w", name, err)
			}
		}
		for name := range given {
			res.Skipped = append(res.Skipped, name)
		}
		slices.Sort(res.Skipped)
		for _, stmt := range later {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		if len(seqs) == 0 {
			return nil
		}
		names, values := make([]string, len(seqs)), make([]int64, len(seqs))
		for i, seq := range seqs {
			names[i], values[i] = seq.Name, seq.Value
		}
		// Each sequence the schema has, set; those it does not have, left out.
		_, err = tx.Exec(ctx, `SELECT pg_catalog.setval(c.oid, v.value, true)
FROM unnest($2::text[], $3::bigint[]) AS v(name, value)
JOIN pg_catalog.pg_class c ON c.relname = v.name AND c.relkind = 'S'
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)`, s.id.Schema, names, values)
		return err
	})
	if err != nil {
		return LoadResult{}, fmt.Errorf("loading into %s: %w", s.id.Schema, err)
	}
	return res, nil
}

// deferIndexes drops the schema's foreign keys and the indexes that back no constraint, and returns
// the statements that make them again, indexes first.
func deferIndexes(ctx context.Context, tx pgx.Tx, schema string) ([]string, error) {
	rows, _ := tx.Query(ctx, `
SELECT 'DROP INDEX ' || pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident(c.relname), pg_catalog.pg_get_indexdef(c.oid), 1
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k WHERE k.conindid = c.oid)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_class t WHERE t.oid = i.indrelid AND t.relname = $2)
UNION ALL
SELECT 'ALTER TABLE ' || k.conrelid::pg_catalog.regclass::text || ' DROP CONSTRAINT ' || pg_catalog.quote_ident(k.conname),
       'ALTER TABLE ' || k.conrelid::pg_catalog.regclass::text || ' ADD CONSTRAINT ' || pg_catalog.quote_ident(k.conname) || ' ' ||
       pg_catalog.pg_get_constraintdef(k.oid), 2
FROM pg_catalog.pg_constraint k
WHERE k.contype = 'f' AND k.connamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
ORDER BY 3, 1`, schema, VersionTable)
	type pair struct{ drop, make string }
	pairs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pair, error) {
		var p pair
		var kind int
		err := row.Scan(&p.drop, &p.make, &kind)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the indexes and foreign keys of %s: %w", schema, err)
	}
	var later []string
	// Foreign keys go before the indexes (none depends on one), and come back after them.
	for i := len(pairs) - 1; i >= 0; i-- {
		if _, err := tx.Exec(ctx, pairs[i].drop); err != nil {
			return nil, fmt.Errorf("%s: %w", pairs[i].drop, err)
		}
	}
	for _, p := range pairs {
		later = append(later, p.make)
	}
	return later, nil
}

// loadOrder is the schema's tables (but the version table) in an order that writes every table after
// those its foreign keys reference; a table that references itself, or a cycle, keeps name order.
func loadOrder(ctx context.Context, tx pgx.Tx, schema string) ([]string, error) {
	rows, _ := tx.Query(ctx, `
SELECT c.relname::text,
       array(SELECT DISTINCT r.relname::text FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class r ON r.oid = k.confrelid
             WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid AND r.relnamespace = c.relnamespace)
FROM pg_catalog.pg_class c
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
  AND c.relkind = 'r' AND NOT c.relispartition AND c.relname <> $2
ORDER BY c.relname COLLATE "C"`, schema, VersionTable)
	type table struct {
		name string
		refs []string
	}
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (table, error) {
		var t table
		err := row.Scan(&t.name, &t.refs)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the foreign keys of %s: %w", schema, err)
	}
	var order []string
	placed := map[string]bool{}
	for len(order) < len(tables) {
		progress := false
		for _, t := range tables {
			if placed[t.name] || !allPlaced(t.refs, placed) {
				continue
			}
			order, placed[t.name], progress = append(order, t.name), true, true
		}
		if !progress { // a cycle: the rest in name order
			for _, t := range tables {
				if !placed[t.name] {
					order, placed[t.name] = append(order, t.name), true
				}
			}
		}
	}
	return order, nil
}

func allPlaced(names []string, placed map[string]bool) bool {
	for _, n := range names {
		if !placed[n] {
			return false
		}
	}
	return true
}
