package http

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

func (s *Server) dashboardPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	d, err := dashboardOf(r, tx)
	if err != nil {
		return nil, err
	}
	cur := tx.Tenant.Settings.CurrencyOrDefault()
	return &view{Page: "dashboard", Title: "Dashboard", User: u, Data: map[string]any{
		"Dashboard": d, "BudgetChart": budgetChart(d.Departments, cur), "TrendChart": trendChart(d.Last12Months, cur),
	}}, nil
}

func (s *Server) expensesPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	list, total, page, perPage, err := listExpenses(r, tx)
	if err != nil {
		return nil, err
	}
	depts, err := tx.Departments(r.Context())
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, k := range []string{"from", "to", "department", "status"} {
		if v := r.FormValue(k); v != "" {
			q.Set(k, v)
		}
	}
	pages := max(1, (total+perPage-1)/perPage)
	return &view{Page: "expenses", Title: "Expenses", User: u, Data: map[string]any{
		"Expenses": list, "Total": total, "Page": page, "Pages": pages, "Prev": page - 1, "Next": page + 1,
		"Departments": depts, "DepartmentID": formIntOrZero(r, "department"), "Status": r.FormValue("status"), "From": r.FormValue("from"),
		"To": r.FormValue("to"), "Query": q.Encode(),
		"Statuses": []string{app.ExpensePending, app.ExpenseApproved, app.ExpenseRejected},
	}}, nil
}

// expensesCSV streams every expense matching the filter.
func (s *Server) expensesCSV(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	f, err := expenseFilter(r)
	if err != nil {
		return nil, err
	}
	cur := tx.Tenant.Settings.CurrencyOrDefault()
	// The rows are read inside the transaction and written after it: a slow reader never holds a
	// pooled connection.
	out := csvFile{name: fmt.Sprintf("expenses-%s.csv", time.Now().Format("2006-01-02")), rows: [][]string{{"id", "date",
		"description", "note", "department", "account", "amount", "currency", "status", "recorded_by", "rejection_reason"}}}
	err = tx.EachExpense(r.Context(), f, func(e *app.Expense) error {
		out.rows = append(out.rows, []string{strconv.FormatInt(e.ID, 10), e.SpentOn.Format("2006-01-02"), csvSafe(e.Description),
			csvSafe(e.Note), csvSafe(e.DepartmentName), csvSafe(e.AccountName),
			app.FormatAmount(e.AmountMinor, cur), cur, e.Status, csvSafe(e.CreatedByEmail), csvSafe(e.RejectionReason)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// csvFile is a CSV download, written once the transaction has committed.
type csvFile struct {
	name string
	rows [][]string
}

func (f csvFile) write(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename=%q`, f.name))
	cw := csv.NewWriter(w)
	_ = cw.WriteAll(f.rows)
}

// csvSafe defuses cells a spreadsheet would run as a formula.
func csvSafe(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r') {
		return "'" + s
	}
	return s
}

// expenseForm gathers what the expense form shows: the budgets of a month the user may spend from.
func (s *Server) expenseForm(r *http.Request, tx *postgres.Tx, u *app.User, e *app.Expense, in app.ExpenseInput) (*view, error) {
	month := app.FirstOfMonth(in.SpentOn)
	if m := r.URL.Query().Get("month"); m != "" {
		t, err := time.Parse("2006-01", m)
		if err != nil {
			return nil, app.Errorf(app.EINVALID, "%q is not a month (YYYY-MM).", m)
		}
		month = t
		if in.SpentOn.IsZero() || app.FirstOfMonth(in.SpentOn) != month {
			in.SpentOn = month
		}
	}
	var dept int64
	if !u.IsAdmin() {
		dept = -1 // no department: no budgets
		if u.DepartmentID != nil {
			dept = *u.DepartmentID
		}
	}
	budgets, err := tx.Budgets(r.Context(), month, max(dept, 0))
	if err != nil {
		return nil, err
	}
	if dept < 0 {
		budgets = nil
	}
	title := "Record an expense"
	if e != nil {
		title = "Edit expense"
	}
	var threshold int64
	if t := tx.Tenant.Settings.ApprovalThreshold; t != nil {
		threshold = *t
	}
	return &view{Page: "expense_form", Title: title, User: u, Data: map[string]any{
		"Expense": e, "Input": in, "Budgets": budgets, "Month": month, "Threshold": threshold,
		"PrevMonth": month.AddDate(0, -1, 0), "NextMonth": month.AddDate(0, 1, 0),
	}}, nil
}

func (s *Server) newExpensePage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.expenseForm(r, tx, u, nil, app.ExpenseInput{SpentOn: time.Now().UTC().Truncate(24 * time.Hour)})
}

func (s *Server) editExpensePage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	e, err := expenseOf(r, tx)
	if err != nil {
		return nil, err
	}
	if !u.IsAdmin() && e.CreatedBy != u.ID {
		return nil, app.Errorf(app.ENOTFOUND, "Expense not found.")
	}
	return s.expenseForm(r, tx, u, e, app.ExpenseInput{BudgetID: e.BudgetID, SpentOn: e.SpentOn,
		Description: e.Description, Note: e.Note, AmountMinor: e.AmountMinor})
}

// expenseInput reads the expense form.
func expenseInput(r *http.Request, currency string) (app.ExpenseInput, error) {
	in := app.ExpenseInput{Description: r.FormValue("description"), Note: r.FormValue("note")}
	var err error
	if in.BudgetID, err = formInt(r, "budget"); err != nil {
		return in, err
	}
	if in.SpentOn, err = formDate(r, "spent_on"); err != nil {
		return in, err
	}
	in.AmountMinor, err = app.ParseAmount(r.FormValue("amount"), currency)
	return in, err
}

func (s *Server) saveExpense(r *http.Request, tx *postgres.Tx, u *app.User, e *app.Expense) (response, error) {
	in, err := expenseInput(r, tx.Tenant.Settings.CurrencyOrDefault())
	if err == nil {
		err = tx.Savepoint(r.Context(), func() error {
			var err error
			if e == nil {
				_, err = tx.CreateExpense(r.Context(), u, in)
			} else {
				_, err = tx.UpdateExpense(r.Context(), u, e.ID, in)
			}
			return err
		})
	}
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.expenseForm(r, tx, u, e, in) })
	}
	return redirect("/expenses"), nil
}

func (s *Server) createExpenseForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.saveExpense(r, tx, u, nil)
}

func (s *Server) updateExpenseForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	e, err := expenseOf(r, tx)
	if err != nil {
		return nil, err
	}
	return s.saveExpense(r, tx, u, e)
}

func (s *Server) deleteExpenseForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if err := tx.DeleteExpense(r.Context(), u, id); err != nil {
		return nil, err
	}
	return redirect("/expenses"), nil
}

func (s *Server) decideExpenseForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if _, err := tx.DecideExpense(r.Context(), u, id, r.FormValue("decision") == "approve", r.FormValue("reason")); err != nil {
		return nil, err
	}
	return redirect("/#pending"), nil
}

func (s *Server) budgetsView(r *http.Request, tx *postgres.Tx, u *app.User, month time.Time) (*view, error) {
	budgets, err := tx.Budgets(r.Context(), month, 0)
	if err != nil {
		return nil, err
	}
	data := map[string]any{"Month": month, "Budgets": budgets}
	if u.IsAdmin() {
		if data["Departments"], err = tx.Departments(r.Context()); err != nil {
			return nil, err
		}
		if data["Accounts"], err = tx.Accounts(r.Context()); err != nil {
			return nil, err
		}
	}
	return &view{Page: "budgets", Title: "Budgets", User: u, Data: data}, nil
}

func (s *Server) budgetsPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	month, err := formMonth(r)
	if err != nil {
		return nil, err
	}
	return s.budgetsView(r, tx, u, month)
}

func (s *Server) createBudgetForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	month, err := formMonth(r)
	if err != nil {
		return nil, err
	}
	in := postgres.BudgetInput{Month: month}
	if in.DepartmentID, err = formInt(r, "department"); err == nil {
		if in.AccountID, err = formInt(r, "account"); err == nil {
			if in.AmountMinor, err = app.ParseAmount(r.FormValue("amount"), tx.Tenant.Settings.CurrencyOrDefault()); err == nil {
				err = tx.Savepoint(r.Context(), func() error { _, err := tx.CreateBudget(r.Context(), in); return err })
			}
		}
	}
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.budgetsView(r, tx, u, month) })
	}
	return redirect("/budgets?month=" + month.Format("2006-01")), nil
}

func (s *Server) departmentsView(r *http.Request, tx *postgres.Tx, u *app.User) (*view, error) {
	depts, err := tx.Departments(r.Context())
	return &view{Page: "departments", Title: "Departments", User: u, Data: depts}, err
}

func (s *Server) departmentsPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.departmentsView(r, tx, u)
}

func (s *Server) createDepartmentForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	if err := tx.Savepoint(r.Context(), func() error {
		_, err := tx.CreateDepartment(r.Context(), r.FormValue("name"))
		return err
	}); err != nil {
		return nil, reshow(err, func() (*view, error) { return s.departmentsView(r, tx, u) })
	}
	return redirect("/departments"), nil
}

func (s *Server) accountsView(r *http.Request, tx *postgres.Tx, u *app.User) (*view, error) {
	accounts, err := tx.Accounts(r.Context())
	return &view{Page: "accounts", Title: "Funding accounts", User: u, Data: accounts}, err
}

func (s *Server) accountsPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.accountsView(r, tx, u)
}

func (s *Server) createAccountForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	total, err := app.ParseAmount(r.FormValue("total"), tx.Tenant.Settings.CurrencyOrDefault())
	if err == nil {
		err = tx.Savepoint(r.Context(), func() error { _, err := tx.CreateAccount(r.Context(), r.FormValue("name"), total); return err })
	}
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.accountsView(r, tx, u) })
	}
	return redirect("/accounts"), nil
}

func (s *Server) usersView(r *http.Request, tx *postgres.Tx, u *app.User) (*view, error) {
	users, err := tx.Users(r.Context())
	if err != nil {
		return nil, err
	}
	depts, err := tx.Departments(r.Context())
	return &view{Page: "users", Title: "Users", User: u, Data: map[string]any{"Users": users, "Departments": depts}}, err
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.usersView(r, tx, u)
}

func userInput(r *http.Request) (postgres.UserInput, error) {
	in := postgres.UserInput{Email: r.FormValue("email"), Name: r.FormValue("name"), Role: r.FormValue("role"),
		Password: r.FormValue("password"), PasswordHash: passwordHashOf(r)}
	dept, err := formInt(r, "department")
	if dept > 0 {
		in.DepartmentID = &dept
	}
	return in, err
}

func (s *Server) createUserForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	in, err := userInput(r)
	if err == nil {
		err = tx.Savepoint(r.Context(), func() error { _, err := tx.CreateUser(r.Context(), in); return err })
	}
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.usersView(r, tx, u) })
	}
	return redirect("/users"), nil
}

func (s *Server) updateUserForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	in, err := userInput(r)
	active := r.FormValue("active") == "on"
	in.Active = &active
	if err == nil {
		err = tx.Savepoint(r.Context(), func() error { _, err := tx.UpdateUser(r.Context(), id, in); return err })
	}
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.usersView(r, tx, u) })
	}
	return redirect("/users"), nil
}

func (s *Server) tokensView(r *http.Request, tx *postgres.Tx, u *app.User, created *postgres.APIToken) (*view, error) {
	tokens, err := tx.APITokens(r.Context(), u.ID)
	return &view{Page: "tokens", Title: "API tokens", User: u, Data: map[string]any{"Tokens": tokens, "New": created}}, err
}

func (s *Server) tokensPage(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	return s.tokensView(r, tx, u, nil)
}

func (s *Server) createTokenForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	t, err := tx.CreateAPIToken(r.Context(), u.ID, r.FormValue("name"))
	if err != nil {
		return nil, reshow(err, func() (*view, error) { return s.tokensView(r, tx, u, nil) })
	}
	// Shown once, on this very response: the database keeps only its hash.
	return s.tokensView(r, tx, u, t)
}

func (s *Server) revokeTokenForm(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if err := tx.RevokeAPIToken(r.Context(), u.ID, id); err != nil {
		return nil, err
	}
	return redirect("/tokens"), nil
}
