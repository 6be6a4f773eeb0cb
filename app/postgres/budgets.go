package postgres

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
)

func cleanName(name, what string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return "", app.Errorf(app.EINVALID, "Give the %s a name of up to 200 characters.", what)
	}
	return name, nil
}

// Departments lists departments, archived ones last.
func (tx *Tx) Departments(ctx context.Context) ([]*app.Department, error) {
	rows, _ := tx.Query(ctx, `SELECT id, name, archived_at IS NOT NULL FROM departments ORDER BY archived_at IS NOT NULL, lower(name)`)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*app.Department, error) {
		d := &app.Department{}
		return d, row.Scan(&d.ID, &d.Name, &d.Archived)
	})
}

// CreateDepartment adds a department.
func (tx *Tx) CreateDepartment(ctx context.Context, name string) (*app.Department, error) {
	name, err := cleanName(name, "department")
	if err != nil {
		return nil, err
	}
	d := &app.Department{Name: name}
	err = tx.QueryRow(ctx, `INSERT INTO departments (name) VALUES ($1) RETURNING id`, name).Scan(&d.ID)
	return d, constraint(err, map[string]string{"departments_name_key": "A department with that name exists."})
}

const accountColumns = `a.id, a.name, a.total_minor, b.committed_minor, b.available_minor, a.archived_at IS NOT NULL
FROM funding_accounts a JOIN account_balances b ON b.account_id = a.id`

func scanAccount(row pgx.CollectableRow) (*app.Account, error) {
	a := &app.Account{}
	return a, row.Scan(&a.ID, &a.Name, &a.TotalMinor, &a.CommittedMinor, &a.AvailableMinor, &a.Archived)
}

// Accounts lists funding accounts with what is committed to budgets and what is left.
func (tx *Tx) Accounts(ctx context.Context) ([]*app.Account, error) {
	rows, _ := tx.Query(ctx, `SELECT `+accountColumns+` ORDER BY a.archived_at IS NOT NULL, lower(a.name)`)
	return pgx.CollectRows(rows, scanAccount)
}

// CreateAccount adds a funding account.
func (tx *Tx) CreateAccount(ctx context.Context, name string, totalMinor int64) (*app.Account, error) {
	name, err := cleanName(name, "account")
	if err != nil {
		return nil, err
	}
	if totalMinor < 0 {
		return nil, app.Errorf(app.EINVALID, "The total cannot be negative.")
	}
	a := &app.Account{Name: name, TotalMinor: totalMinor, AvailableMinor: totalMinor}
	err = tx.QueryRow(ctx, `INSERT INTO funding_accounts (name, total_minor) VALUES ($1, $2) RETURNING id`, name, totalMinor).Scan(&a.ID)
	return a, constraint(err, map[string]string{"funding_accounts_name_key": "An account with that name exists."})
}

// budgetColumns derives spent and pending per budget with a lateral sum over its expenses (by index),
// rather than through the budget_balances view, whose GROUP BY would aggregate every month's budgets
// before the month filter applies.
const budgetColumns = `b.id, b.department_id, d.name, b.account_id, a.name, b.month, b.amount_minor, bb.spent_minor, bb.pending_minor
FROM budgets b
JOIN departments d ON d.id = b.department_id
JOIN funding_accounts a ON a.id = b.account_id
CROSS JOIN LATERAL (
    SELECT coalesce(sum(e.amount_minor) FILTER (WHERE e.status = 'approved'), 0)::bigint AS spent_minor,
           coalesce(sum(e.amount_minor) FILTER (WHERE e.status = 'pending'), 0)::bigint  AS pending_minor
    FROM expenses e WHERE e.budget_id = b.id) bb`

func scanBudget(row pgx.CollectableRow) (*app.Budget, error) {
	b := &app.Budget{}
	return b, row.Scan(&b.ID, &b.DepartmentID, &b.DepartmentName, &b.AccountID, &b.AccountName, &b.Month,
		&b.AmountMinor, &b.SpentMinor, &b.PendingMinor)
}

// Budgets lists the budgets of a month; departmentID > 0 narrows to one department.
func (tx *Tx) Budgets(ctx context.Context, month time.Time, departmentID int64) ([]*app.Budget, error) {
	rows, _ := tx.Query(ctx, `SELECT `+budgetColumns+`
WHERE b.month = $1 AND ($2 = 0 OR b.department_id = $2)
ORDER BY lower(d.name), lower(a.name)`, app.FirstOfMonth(month), departmentID)
	return pgx.CollectRows(rows, scanBudget)
}

// Budget returns one budget.
func (tx *Tx) Budget(ctx context.Context, id int64) (*app.Budget, error) {
	rows, _ := tx.Query(ctx, `SELECT `+budgetColumns+` WHERE b.id = $1`, id)
	b, err := pgx.CollectExactlyOneRow(rows, scanBudget)
	return b, notFound(err, "Budget")
}

// BudgetInput is what an admin enters for a budget.
type BudgetInput struct {
	DepartmentID int64     `json:"departmentId"`
	AccountID    int64     `json:"accountId"`
	Month        time.Time `json:"month"`
	AmountMinor  int64     `json:"amountMinor"`
}

// CreateBudget gives a department money for a month from an account. The account row is locked while
// its commitments are added up, so two budgets created at once cannot together over-commit it.
func (tx *Tx) CreateBudget(ctx context.Context, in BudgetInput) (*app.Budget, error) {
	if in.DepartmentID <= 0 || in.AccountID <= 0 || in.Month.IsZero() {
		return nil, app.Errorf(app.EINVALID, "Choose a department, an account and a month.")
	}
	if in.AmountMinor <= 0 {
		return nil, app.Errorf(app.EINVALID, "The amount must be more than zero.")
	}
	// Lock first, then add up in a statement of its own: in READ COMMITTED a statement that waited for
	// the lock still reads with the snapshot it started with, and would miss the budget just committed.
	var total, committed int64
	if err := tx.QueryRow(ctx, `SELECT total_minor FROM funding_accounts WHERE id = $1 AND archived_at IS NULL FOR UPDATE`,
		in.AccountID).Scan(&total); err != nil {
		return nil, notFound(err, "Account")
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce(sum(amount_minor), 0) FROM budgets WHERE account_id = $1`,
		in.AccountID).Scan(&committed); err != nil {
		return nil, err
	}
	if committed+in.AmountMinor > total {
		return nil, app.Errorf(app.ECONFLICT, "The account has only %s left to commit.",
			app.FormatMoney(total-committed, tx.Tenant.Settings.CurrencyOrDefault()))
	}
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO budgets (department_id, account_id, month, amount_minor) VALUES ($1, $2, $3, $4) RETURNING id`,
		in.DepartmentID, in.AccountID, app.FirstOfMonth(in.Month), in.AmountMinor).Scan(&id)
	if err != nil {
		return nil, constraint(err, map[string]string{
			"budgets_department_id_account_id_month_key": "That department already has a budget from that account for that month.",
			"budgets_department_id_fkey":                 "Department not found.",
		})
	}
	return tx.Budget(ctx, id)
}
