package http

import (
	"net/http"
	"strconv"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

// pathID reads the {id} of a route.
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, app.Errorf(app.ENOTFOUND, "Not found.")
	}
	return id, nil
}

// formInt reads an optional positive integer field; empty is 0.
func formInt(r *http.Request, name string) (int64, error) {
	v := r.FormValue(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, app.Errorf(app.EINVALID, "%s is not a valid choice.", name)
	}
	return n, nil
}

// formIntOrZero reads an optional integer field for re-display; anything unreadable is 0.
func formIntOrZero(r *http.Request, name string) int64 {
	n, _ := formInt(r, name)
	return n
}

// formDate reads a YYYY-MM-DD field; empty is the zero time.
func formDate(r *http.Request, name string) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse("2006-01-02", v)
	if err != nil {
		return time.Time{}, app.Errorf(app.EINVALID, "%q is not a date (YYYY-MM-DD).", v)
	}
	return t, nil
}

// formMonth reads the YYYY-MM field "month"; empty is this month.
func formMonth(r *http.Request) (time.Time, error) {
	const name = "month"
	v := r.FormValue(name)
	if v == "" {
		return app.FirstOfMonth(time.Now()), nil
	}
	t, err := time.Parse("2006-01", v)
	if err != nil {
		return time.Time{}, app.Errorf(app.EINVALID, "%q is not a month (YYYY-MM).", v)
	}
	return t, nil
}

// expenseFilter reads list filters from the query string.
func expenseFilter(r *http.Request) (app.ExpenseFilter, error) {
	var f app.ExpenseFilter
	var err error
	if f.From, err = formDate(r, "from"); err != nil {
		return f, err
	}
	if f.To, err = formDate(r, "to"); err != nil {
		return f, err
	}
	if f.DepartmentID, err = formInt(r, "department"); err != nil {
		return f, err
	}
	switch f.Status = r.FormValue("status"); f.Status {
	case "", app.ExpensePending, app.ExpenseApproved, app.ExpenseRejected:
	default:
		return f, app.Errorf(app.EINVALID, "status must be pending, approved or rejected.")
	}
	return f, nil
}

// page reads ?page= and ?per_page= (default 50, at most 500).
func pagination(r *http.Request) (page, perPage int, err error) {
	page, perPage = 1, 50
	if v := r.FormValue("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			return 0, 0, app.Errorf(app.EINVALID, "page must be a positive number.")
		}
	}
	if v := r.FormValue("per_page"); v != "" {
		if perPage, err = strconv.Atoi(v); err != nil || perPage < 1 || perPage > 500 {
			return 0, 0, app.Errorf(app.EINVALID, "per_page must be between 1 and 500.")
		}
	}
	return page, perPage, nil
}

// listExpenses reads the filters and page of a request and returns that page of expenses.
func listExpenses(r *http.Request, tx *postgres.Tx) (items []*app.Expense, total, page, perPage int, err error) {
	f, err := expenseFilter(r)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	if page, perPage, err = pagination(r); err != nil {
		return nil, 0, 0, 0, err
	}
	f.Limit, f.Offset = perPage, (page-1)*perPage
	items, total, err = tx.Expenses(r.Context(), f)
	return items, total, page, perPage, err
}

// expenseOf loads the expense of the route's {id}. Every user of a tenant may read its expenses;
// changing one is for its author and admins (postgres.Tx enforces that).
func expenseOf(r *http.Request, tx *postgres.Tx) (*app.Expense, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	return tx.Expense(r.Context(), id)
}

// dashboardOf is the dashboard of the month in ?month= (this month by default).
func dashboardOf(r *http.Request, tx *postgres.Tx) (*app.Dashboard, error) {
	month, err := formMonth(r)
	if err != nil {
		return nil, err
	}
	return tx.Dashboard(r.Context(), month)
}
