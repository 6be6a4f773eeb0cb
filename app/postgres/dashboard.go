package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
)

// Dashboard gathers a month's budgets against spending per department, approved spending over the 12
// months up to it, and what waits for approval.
func (tx *Tx) Dashboard(ctx context.Context, month time.Time) (*app.Dashboard, error) {
	month = app.FirstOfMonth(month)
	d := &app.Dashboard{Month: month}
	// Only the month's budgets and their expenses are read (budgets by month, expenses by budget).
	rows, _ := tx.Query(ctx, `
WITH b AS (SELECT id, department_id, amount_minor FROM budgets WHERE month = $1),
     planned AS (SELECT department_id, sum(amount_minor) AS amount FROM b GROUP BY department_id),
     used AS (
        SELECT b.department_id,
               sum(e.amount_minor) FILTER (WHERE e.status = 'approved') AS spent,
               sum(e.amount_minor) FILTER (WHERE e.status = 'pending')  AS pending
        FROM b JOIN expenses e ON e.budget_id = b.id
        GROUP BY b.department_id)
SELECT d.id, d.name, coalesce(p.amount, 0)::bigint, coalesce(u.spent, 0)::bigint, coalesce(u.pending, 0)::bigint
FROM departments d
LEFT JOIN planned p ON p.department_id = d.id
LEFT JOIN used u ON u.department_id = d.id
WHERE d.archived_at IS NULL
ORDER BY lower(d.name)`, month)
	var err error
	if d.Departments, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (app.DepartmentMonth, error) {
		var m app.DepartmentMonth
		return m, row.Scan(&m.DepartmentID, &m.Name, &m.BudgetMinor, &m.SpentMinor, &m.PendingMinor)
	}); err != nil {
		return nil, err
	}
	rows, _ = tx.Query(ctx, `
SELECT m::date, coalesce(sum(e.amount_minor), 0)::bigint
FROM generate_series($1::date - interval '11 months', $1::date, interval '1 month') m
LEFT JOIN expenses e ON e.status = 'approved' AND e.spent_on >= m AND e.spent_on < m + interval '1 month'
GROUP BY m ORDER BY m`, month)
	if d.Last12Months, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (app.MonthTotal, error) {
		var m app.MonthTotal
		return m, row.Scan(&m.Month, &m.SpentMinor)
	}); err != nil {
		return nil, err
	}
	pending, total, err := tx.Expenses(ctx, app.ExpenseFilter{Status: app.ExpensePending, Limit: 10})
	if err != nil {
		return nil, err
	}
	d.PendingCount = total
	for _, e := range pending {
		d.Pending = append(d.Pending, *e)
	}
	return d, nil
}
