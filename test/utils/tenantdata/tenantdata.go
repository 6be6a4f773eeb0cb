// Package tenantdata puts rows in every table of a tenant schema, for tests that copy a tenant's data
// (backups, restores, clones) and compare every row afterwards.
package tenantdata

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// FillEveryTable is the SQL that puts rows in every table of a tenant schema at the release's latest
// version (run with the schema first on the search_path), with values a copy must carry as they are:
// tabs, newlines, backslashes, quotes, NULLs, bytes and non-ASCII text. It adds Rows rows, and
// expenses ids 1 to 500 after users 1 and 2.
const FillEveryTable = `
INSERT INTO departments (name) VALUES ('Sales'), (E'R&D\twith a tab'), ('Ops');
INSERT INTO funding_accounts (name, total_minor) VALUES ('Main', 1000000), (E'Grant "β"\\2026', 500);
INSERT INTO budgets (department_id, account_id, month, amount_minor)
  SELECT d.id, a.id, date '2026-11-01', 1000 FROM departments d, funding_accounts a;
INSERT INTO users (email, name, role, password_hash, department_id)
  VALUES ('a@x.test', E'Ann\nLine', 'admin', 'h1', (SELECT min(id) FROM departments)), ('b@x.test', 'Bö', 'member', 'h2', NULL);
INSERT INTO expenses (budget_id, spent_on, description, note, amount_minor, status, created_by, decided_by, decided_at, rejection_reason)
  SELECT (SELECT min(id) FROM budgets) + g % 6, date '2026-11-01' + g % 28, 'item ' || g, CASE WHEN g % 3 = 0 THEN E'a\\b\r\nc' ELSE '' END, 100 + g,
         CASE WHEN g % 5 = 0 THEN 'rejected' ELSE 'approved' END, u.id, CASE WHEN g % 5 = 0 THEN u.id END,
         CASE WHEN g % 5 = 0 THEN now() END, CASE WHEN g % 5 = 0 THEN 'no' ELSE '' END
  FROM generate_series(1, 500) g, (SELECT min(id) AS id FROM users WHERE email = 'a@x.test') u;
INSERT INTO sessions (token_hash, user_id, expires_at) SELECT '\x0102', id, now() + interval '1 day' FROM users WHERE email = 'a@x.test';
INSERT INTO api_tokens (user_id, name, token_hash) SELECT id, 'ci', '\x0a0b' FROM users WHERE email = 'b@x.test';`

// Rows is the number of rows FillEveryTable adds.
const Rows = 3 + 2 + 6 + 2 + 500 + 1 + 1

// Tables are the tables of a tenant schema at the release's latest version (but the version table).
var Tables = []string{"api_tokens", "budgets", "departments", "expenses", "funding_accounts", "sessions", "users"}

// Querier is what Fill and Dump need of a connection (a pool, a connection, a transaction).
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Fill runs FillEveryTable in schema, in one transaction, as whoever q is logged in as.
func Fill(ctx context.Context, q Querier, schema string) error {
	_, err := q.Exec(ctx, "BEGIN; SET LOCAL search_path = "+pgx.Identifier{schema}.Sanitize()+"; "+FillEveryTable+" COMMIT")
	if err != nil {
		return fmt.Errorf("filling %s: %w", schema, err)
	}
	return nil
}

// Dump is a table's rows as text, sorted; with columns, only those columns of each row.
func Dump(ctx context.Context, q Querier, schema, table string, columns ...string) ([]string, error) {
	sel := "r"
	if len(columns) > 0 {
		sel = "("
		for i, c := range columns {
			if i > 0 {
				sel += ", "
			}
			sel += "r." + pgx.Identifier{c}.Sanitize()
		}
		sel += ")"
	}
	rows, _ := q.Query(ctx, "SELECT "+sel+"::text FROM "+pgx.Identifier{schema, table}.Sanitize()+" r ORDER BY 1")
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading %s.%s: %w", schema, table, err)
	}
	return out, nil
}
