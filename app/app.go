// Package app is the multi-tenant expense tracker's domain: tenants as the registry describes them,
// users, departments, funding accounts, monthly budgets and expenses, and the one error type every layer
// speaks. Storage lives in app/postgres, HTTP in app/http; migrations in app/migrations.
package app

import (
	"errors"
	"fmt"
	"time"

	"tenantry.dev/tenantry/internal/registry"
)

// Tenant is one customer as the registry (tenantry.tenants) describes it. The registry's contract,
// this type among it, has one home: internal/registry, which the operator imports too.
type Tenant = registry.Tenant

// Branding is how pages look for a tenant.
type Branding = registry.Branding

// Settings are a tenant's business rules.
type Settings = registry.Settings

// Tenant states.
const (
	StateActive       = registry.StateActive
	StateSuspended    = registry.StateSuspended
	StateProvisioning = registry.StateProvisioning
)

// Roles of users.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// User is a person who signs in to one tenant.
type User struct {
	ID           int64     `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Active       bool      `json:"active"`
	DepartmentID *int64    `json:"departmentId,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
}

// IsAdmin reports whether the user may manage the tenant.
func (u *User) IsAdmin() bool { return u.Role == RoleAdmin }

// Department is a team that gets budgets and spends them.
type Department struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Archived bool   `json:"archived"`
}

// Account is a funding account budgets are drawn from. Committed and available are derived.
type Account struct {
	ID             int64  `json:"id"`
	Name           string `json:"name"`
	TotalMinor     int64  `json:"totalMinor"`
	CommittedMinor int64  `json:"committedMinor"`
	AvailableMinor int64  `json:"availableMinor"`
	Archived       bool   `json:"archived"`
}

// Budget is a department's money for one month from one account. Spent and pending are derived from
// its expenses: approved ones are spent, pending ones wait.
type Budget struct {
	ID             int64     `json:"id"`
	DepartmentID   int64     `json:"departmentId"`
	DepartmentName string    `json:"departmentName"`
	AccountID      int64     `json:"accountId"`
	AccountName    string    `json:"accountName"`
	Month          time.Time `json:"month"`
	AmountMinor    int64     `json:"amountMinor"`
	SpentMinor     int64     `json:"spentMinor"`
	PendingMinor   int64     `json:"pendingMinor"`
}

// RemainingMinor is what is left of the budget once approved and pending expenses are paid.
func (b *Budget) RemainingMinor() int64 { return b.AmountMinor - b.SpentMinor - b.PendingMinor }

// Expense states.
const (
	ExpensePending  = "pending"
	ExpenseApproved = "approved"
	ExpenseRejected = "rejected"
)

// Expense is money spent from a budget.
type Expense struct {
	ID              int64      `json:"id"`
	BudgetID        int64      `json:"budgetId"`
	DepartmentID    int64      `json:"departmentId"`
	DepartmentName  string     `json:"departmentName"`
	AccountName     string     `json:"accountName"`
	SpentOn         time.Time  `json:"spentOn"`
	Description     string     `json:"description"`
	Note            string     `json:"note"`
	AmountMinor     int64      `json:"amountMinor"`
	Status          string     `json:"status"`
	CreatedBy       int64      `json:"createdBy"`
	CreatedByEmail  string     `json:"createdByEmail"`
	DecidedBy       *int64     `json:"decidedBy,omitempty"`
	DecidedAt       *time.Time `json:"decidedAt,omitempty"`
	RejectionReason string     `json:"rejectionReason,omitempty"`
	CreatedAt       time.Time  `json:"createdAt"`
}

// ExpenseInput is what a user enters for an expense.
type ExpenseInput struct {
	BudgetID    int64     `json:"budgetId"`
	SpentOn     time.Time `json:"spentOn"`
	Description string    `json:"description"`
	Note        string    `json:"note"`
	AmountMinor int64     `json:"amountMinor"`
}

// Validate checks an expense before it reaches the database.
func (in *ExpenseInput) Validate() error {
	switch {
	case in.BudgetID <= 0:
		return Errorf(EINVALID, "Choose a budget.")
	case in.SpentOn.IsZero():
		return Errorf(EINVALID, "Enter the date of the expense.")
	case in.Description == "":
		return Errorf(EINVALID, "Enter a description.")
	case len(in.Description) > 500 || len(in.Note) > 2000:
		return Errorf(EINVALID, "Description or note is too long.")
	case in.AmountMinor <= 0:
		return Errorf(EINVALID, "The amount must be more than zero.")
	}
	return nil
}

// ExpenseFilter selects expenses for a list, a page of the API or a CSV export.
type ExpenseFilter struct {
	From, To     time.Time // inclusive dates; zero means open
	DepartmentID int64
	Status       string
	Limit        int // 0: no limit
	Offset       int
}

// DepartmentMonth is one department's budget against spending for a month.
type DepartmentMonth struct {
	DepartmentID int64  `json:"departmentId"`
	Name         string `json:"name"`
	BudgetMinor  int64  `json:"budgetMinor"`
	SpentMinor   int64  `json:"spentMinor"`
	PendingMinor int64  `json:"pendingMinor"`
}

// MonthTotal is the approved spending of one month.
type MonthTotal struct {
	Month      time.Time `json:"month"`
	SpentMinor int64     `json:"spentMinor"`
}

// Dashboard is what a finance lead looks at first.
type Dashboard struct {
	Month        time.Time         `json:"month"`
	Departments  []DepartmentMonth `json:"departments"`
	Last12Months []MonthTotal      `json:"last12Months"`
	Pending      []Expense         `json:"pending"`
	PendingCount int               `json:"pendingCount"`
}

// Error codes, mapped to HTTP status codes in exactly one place (app/http).
const (
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"
	EUNAUTHORIZED = "unauthorized"
	EFORBIDDEN    = "forbidden"
	ERATELIMIT    = "rate_limited"
	EUNAVAILABLE  = "unavailable"
	EINTERNAL     = "internal"
)

// Error is an error a user may see: a code and a message written for them, and, for the logs only,
// the error behind it.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s (%v)", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode is the code of an *Error in err's chain, EINTERNAL for anything else.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage is the message of an *Error in err's chain; anything else stays private.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Something went wrong on our side."
}

// FirstOfMonth returns midnight UTC of the first day of t's month.
func FirstOfMonth(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}
