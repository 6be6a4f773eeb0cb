package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
)

const expenseColumns = `e.id, e.budget_id, b.department_id, d.name, a.name, e.spent_on, e.description, e.note,
e.amount_minor, e.status, e.created_by, u.email, e.decided_by, e.decided_at, e.rejection_reason, e.created_at
FROM expenses e
JOIN budgets b ON b.id = e.budget_id
JOIN departments d ON d.id = b.department_id
JOIN funding_accounts a ON a.id = b.account_id
JOIN users u ON u.id = e.created_by`

func scanExpense(row pgx.CollectableRow) (*app.Expense, error) {
	e := &app.Expense{}
	return e, row.Scan(&e.ID, &e.BudgetID, &e.DepartmentID, &e.DepartmentName, &e.AccountName, &e.SpentOn,
		&e.Description, &e.Note, &e.AmountMinor, &e.Status, &e.CreatedBy, &e.CreatedByEmail, &e.DecidedBy,
		&e.DecidedAt, &e.RejectionReason, &e.CreatedAt)
}

func expenseWhere(f app.ExpenseFilter) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if !f.From.IsZero() {
		add("e.spent_on >= $%d", f.From)
	}
	if !f.To.IsZero() {
		add("e.spent_on <= $%d", f.To)
	}
	if f.DepartmentID > 0 {
		add("b.department_id = $%d", f.DepartmentID)
	}
	if f.Status != "" {
		add("e.status = $%d", f.Status)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// Expenses lists expenses, newest first, and counts all that match the filter.
func (tx *Tx) Expenses(ctx context.Context, f app.ExpenseFilter) ([]*app.Expense, int, error) {
	where, args := expenseWhere(f)
	var total int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM expenses e JOIN budgets b ON b.id = e.budget_id`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	q := `SELECT ` + expenseColumns + where + ` ORDER BY e.spent_on DESC, e.id DESC`
	if f.Limit > 0 {
		args = append(args, f.Limit, f.Offset)
		q += fmt.Sprintf(" LIMIT $%d OFFSET $%d", len(args)-1, len(args))
	}
	rows, _ := tx.Query(ctx, q, args...)
	list, err := pgx.CollectRows(rows, scanExpense)
	return list, total, err
}

// EachExpense streams every expense matching the filter, for exports of any size.
func (tx *Tx) EachExpense(ctx context.Context, f app.ExpenseFilter, fn func(*app.Expense) error) error {
	where, args := expenseWhere(f)
	rows, err := tx.Query(ctx, `SELECT `+expenseColumns+where+` ORDER BY e.spent_on DESC, e.id DESC`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanExpense(rows)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Expense returns one expense.
func (tx *Tx) Expense(ctx context.Context, id int64) (*app.Expense, error) {
	rows, _ := tx.Query(ctx, `SELECT `+expenseColumns+` WHERE e.id = $1`, id)
	e, err := pgx.CollectExactlyOneRow(rows, scanExpense)
	return e, notFound(err, "Expense")
}

// checkBudget makes sure the user may spend from a budget and that the date falls in its month.
func (tx *Tx) checkBudget(ctx context.Context, user *app.User, in *app.ExpenseInput) error {
	var dept int64
	var month time.Time
	if err := tx.QueryRow(ctx, `SELECT department_id, month FROM budgets WHERE id = $1`, in.BudgetID).Scan(&dept, &month); err != nil {
		return notFound(err, "Budget")
	}
	if !user.IsAdmin() && (user.DepartmentID == nil || *user.DepartmentID != dept) {
		return app.Errorf(app.EFORBIDDEN, "You can only record expenses against your own department's budgets.")
	}
	if app.FirstOfMonth(in.SpentOn) != month {
		return app.Errorf(app.EINVALID, "The date must fall in the budget's month, %s.", month.Format("January 2006"))
	}
	return nil
}

// admit validates an expense the user enters and decides its status by the tenant's approval threshold.
func (tx *Tx) admit(ctx context.Context, user *app.User, in *app.ExpenseInput) (string, error) {
	if err := in.Validate(); err != nil {
		return "", err
	}
	if err := tx.checkBudget(ctx, user, in); err != nil {
		return "", err
	}
	if tx.Tenant.Settings.NeedsApproval(in.AmountMinor) {
		return app.ExpensePending, nil
	}
	return app.ExpenseApproved, nil
}

// CreateExpense records an expense. Above the tenant's approval threshold it waits for an admin.
func (tx *Tx) CreateExpense(ctx context.Context, user *app.User, in app.ExpenseInput) (*app.Expense, error) {
	status, err := tx.admit(ctx, user, &in)
	if err != nil {
		return nil, err
	}
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO expenses (budget_id, spent_on, description, note, amount_minor, status, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		in.BudgetID, in.SpentOn, in.Description, in.Note, in.AmountMinor, status, user.ID).Scan(&id)
	if err != nil {
		return nil, constraint(err, nil)
	}
	return tx.Expense(ctx, id)
}

// editable says whether the user may change an expense: their own, or any for an admin; decided ones
// only by an admin.
func (tx *Tx) editable(ctx context.Context, user *app.User, id int64) error {
	e, err := tx.Expense(ctx, id)
	if err != nil {
		return err
	}
	if !user.IsAdmin() && e.CreatedBy != user.ID {
		return app.Errorf(app.ENOTFOUND, "Expense not found.")
	}
	if !user.IsAdmin() && e.Status == app.ExpenseRejected {
		return app.Errorf(app.ECONFLICT, "A rejected expense cannot be changed.")
	}
	return nil
}

// UpdateExpense changes an expense. Its approval is decided afresh: an amount raised above the threshold
// waits again. Balances are derived, so nothing is counted twice.
func (tx *Tx) UpdateExpense(ctx context.Context, user *app.User, id int64, in app.ExpenseInput) (*app.Expense, error) {
	if err := tx.editable(ctx, user, id); err != nil {
		return nil, err
	}
	status, err := tx.admit(ctx, user, &in)
	if err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `UPDATE expenses SET budget_id = $2, spent_on = $3, description = $4, note = $5,
amount_minor = $6, status = $7, decided_by = NULL, decided_at = NULL, rejection_reason = '', updated_at = now()
WHERE id = $1`, id, in.BudgetID, in.SpentOn, in.Description, in.Note, in.AmountMinor, status)
	if err != nil {
		return nil, constraint(err, nil)
	}
	return tx.Expense(ctx, id)
}

// DeleteExpense removes an expense.
func (tx *Tx) DeleteExpense(ctx context.Context, user *app.User, id int64) error {
	if err := tx.editable(ctx, user, id); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM expenses WHERE id = $1`, id)
	return err
}

// DecideExpense approves or rejects a pending expense (admins only; a rejection needs a reason).
func (tx *Tx) DecideExpense(ctx context.Context, admin *app.User, id int64, approve bool, reason string) (*app.Expense, error) {
	if !admin.IsAdmin() {
		return nil, app.Errorf(app.EFORBIDDEN, "Only admins approve expenses.")
	}
	reason = strings.TrimSpace(reason)
	status := app.ExpenseApproved
	if !approve {
		status = app.ExpenseRejected
		if reason == "" {
			return nil, app.Errorf(app.EINVALID, "Give a reason for the rejection.")
		}
	}
	tag, err := tx.Exec(ctx, `UPDATE expenses SET status = $2, decided_by = $3, decided_at = now(), rejection_reason = $4,
updated_at = now() WHERE id = $1 AND status = 'pending'`, id, status, admin.ID, reason)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		if _, err := tx.Expense(ctx, id); err != nil {
			return nil, err
		}
		return nil, app.Errorf(app.ECONFLICT, "That expense is not waiting for approval.")
	}
	return tx.Expense(ctx, id)
}
