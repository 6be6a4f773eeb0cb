package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Usage is what a tenant uses of the app, as its schema holds it.
type Usage struct {
	Users, ActiveUsers, Expenses int64
	// SchemaBytes is the disk space of the schema's relations: tables, indexes, TOAST.
	SchemaBytes int64
}

// Usage measures a tenant's schema in one statement: its users (all and active), its expenses, and the
// size of every relation in it. The counts are exact (a tenant is billed by them); on the app's tables
// they take an index-only scan at most.
func (db *DB) Usage(ctx context.Context, schema string) (Usage, error) {
	q := func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }
	var u Usage
	err := db.pool.QueryRow(ctx, `
SELECT (SELECT count(*) FROM `+q("users")+`),
       (SELECT count(*) FROM `+q("users")+` WHERE active),
       (SELECT count(*) FROM `+q("expenses")+`),
       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
         WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind IN ('r', 'm', 'p'))`,
		schema).Scan(&u.Users, &u.ActiveUsers, &u.Expenses, &u.SchemaBytes)
	if err != nil {
		return Usage{}, fmt.Errorf("measuring the usage of schema %q: %w", schema, err)
	}
	return u, nil
}
