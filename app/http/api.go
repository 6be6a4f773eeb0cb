package http

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

// jsonResponse is an API answer, written after commit.
type jsonResponse struct {
	status int
	body   any
}

func (j jsonResponse) write(w http.ResponseWriter, r *http.Request) {
	if j.status == http.StatusNoContent {
		w.WriteHeader(j.status)
		return
	}
	writeJSON(w, j.status, j.body)
}

func ok(body any) (response, error)      { return jsonResponse{http.StatusOK, body}, nil }
func created(body any) (response, error) { return jsonResponse{http.StatusCreated, body}, nil }

// decode reads a JSON body strictly: unknown fields are an error, so typos do not pass silently.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return app.Errorf(app.EINVALID, "The request body is not valid JSON for this operation: %v", err)
	}
	return nil
}

// list is a page of results.
type list struct {
	Items   any `json:"items"`
	Page    int `json:"page"`
	PerPage int `json:"perPage"`
	Total   int `json:"total"`
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	t := tx.Tenant
	return ok(map[string]any{"user": u, "tenant": map[string]any{
		"name": t.Name, "displayName": t.DisplayName, "currency": t.Settings.CurrencyOrDefault(),
		"approvalThreshold": t.Settings.ApprovalThreshold, "branding": t.Branding,
	}})
}

func (s *Server) apiDashboard(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	d, err := dashboardOf(r, tx)
	if err != nil {
		return nil, err
	}
	return ok(d)
}

func (s *Server) apiDepartments(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	d, err := tx.Departments(r.Context())
	if err != nil {
		return nil, err
	}
	return ok(map[string]any{"items": d})
}

func (s *Server) apiCreateDepartment(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	d, err := tx.CreateDepartment(r.Context(), in.Name)
	if err != nil {
		return nil, err
	}
	return created(d)
}

func (s *Server) apiAccounts(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	a, err := tx.Accounts(r.Context())
	if err != nil {
		return nil, err
	}
	return ok(map[string]any{"items": a})
}

func (s *Server) apiCreateAccount(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var in struct {
		Name       string `json:"name"`
		TotalMinor int64  `json:"totalMinor"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	a, err := tx.CreateAccount(r.Context(), in.Name, in.TotalMinor)
	if err != nil {
		return nil, err
	}
	return created(a)
}

func (s *Server) apiBudgets(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	month, err := formMonth(r)
	if err != nil {
		return nil, err
	}
	dept, err := formInt(r, "department")
	if err != nil {
		return nil, err
	}
	b, err := tx.Budgets(r.Context(), month, dept)
	if err != nil {
		return nil, err
	}
	return ok(map[string]any{"items": b})
}

func (s *Server) apiCreateBudget(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var in struct {
		DepartmentID int64  `json:"departmentId"`
		AccountID    int64  `json:"accountId"`
		Month        string `json:"month"` // YYYY-MM
		AmountMinor  int64  `json:"amountMinor"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	month, err := time.Parse("2006-01", in.Month)
	if err != nil {
		return nil, app.Errorf(app.EINVALID, "month must be YYYY-MM.")
	}
	b, err := tx.CreateBudget(r.Context(), postgres.BudgetInput{DepartmentID: in.DepartmentID, AccountID: in.AccountID,
		Month: month, AmountMinor: in.AmountMinor})
	if err != nil {
		return nil, err
	}
	return created(b)
}

func (s *Server) apiExpenses(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	items, total, page, perPage, err := listExpenses(r, tx)
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []*app.Expense{}
	}
	return ok(list{Items: items, Page: page, PerPage: perPage, Total: total})
}

// expenseBody is the JSON of an expense to create or change; spentOn is YYYY-MM-DD.
type expenseBody struct {
	BudgetID    int64  `json:"budgetId"`
	SpentOn     string `json:"spentOn"`
	Description string `json:"description"`
	Note        string `json:"note"`
	AmountMinor int64  `json:"amountMinor"`
}

func (b expenseBody) input() (app.ExpenseInput, error) {
	in := app.ExpenseInput{BudgetID: b.BudgetID, Description: b.Description, Note: b.Note, AmountMinor: b.AmountMinor}
	var err error
	if in.SpentOn, err = time.Parse("2006-01-02", b.SpentOn); err != nil {
		return in, app.Errorf(app.EINVALID, "spentOn must be a date, YYYY-MM-DD.")
	}
	return in, nil
}

func (s *Server) apiCreateExpense(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var body expenseBody
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	in, err := body.input()
	if err != nil {
		return nil, err
	}
	e, err := tx.CreateExpense(r.Context(), u, in)
	if err != nil {
		return nil, err
	}
	return created(e)
}

func (s *Server) apiExpense(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	e, err := expenseOf(r, tx)
	if err != nil {
		return nil, err
	}
	return ok(e)
}

func (s *Server) apiUpdateExpense(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	e, err := expenseOf(r, tx)
	if err != nil {
		return nil, err
	}
	// PATCH: start from the expense as it is and apply the fields sent.
	body := expenseBody{BudgetID: e.BudgetID, SpentOn: e.SpentOn.Format("2006-01-02"), Description: e.Description,
		Note: e.Note, AmountMinor: e.AmountMinor}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	in, err := body.input()
	if err != nil {
		return nil, err
	}
	e, err = tx.UpdateExpense(r.Context(), u, e.ID, in)
	if err != nil {
		return nil, err
	}
	return ok(e)
}

func (s *Server) apiDeleteExpense(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if err := tx.DeleteExpense(r.Context(), u, id); err != nil {
		return nil, err
	}
	return jsonResponse{status: http.StatusNoContent}, nil
}

func (s *Server) apiDecide(approve bool) handler {
	return func(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		var in struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 {
			if err := decode(r, &in); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
		}
		e, err := tx.DecideExpense(r.Context(), u, id, approve, in.Reason)
		if err != nil {
			return nil, err
		}
		return ok(e)
	}
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	users, err := tx.Users(r.Context())
	if err != nil {
		return nil, err
	}
	return ok(map[string]any{"items": users})
}

func (s *Server) apiCreateUser(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var in postgres.UserInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	in.PasswordHash = passwordHashOf(r)
	nu, err := tx.CreateUser(r.Context(), in)
	if err != nil {
		return nil, err
	}
	return created(nu)
}

func (s *Server) apiUpdateUser(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	cur, err := tx.User(r.Context(), id)
	if err != nil {
		return nil, err
	}
	in := postgres.UserInput{Name: cur.Name, Role: cur.Role, DepartmentID: cur.DepartmentID, Active: &cur.Active}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	nu, err := tx.UpdateUser(r.Context(), id, in)
	if err != nil {
		return nil, err
	}
	return ok(nu)
}

func (s *Server) apiCreateToken(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	t, err := tx.CreateAPIToken(r.Context(), u.ID, in.Name)
	if err != nil {
		return nil, err
	}
	return created(t)
}

func (s *Server) apiRevokeToken(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if err := tx.RevokeAPIToken(r.Context(), u.ID, id); err != nil {
		return nil, err
	}
	return jsonResponse{status: http.StatusNoContent}, nil
}
