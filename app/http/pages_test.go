package http_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Every page renders for an admin, escapes what users typed, and admin pages are closed to members.
func TestServer_pages(t *testing.T) {
	h := newHarness(t, options{})
	sa := h.loginA()
	const evil = `<script>alert("x")</script>`
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/departments", session: sa,
		json: fmt.Sprintf(`{"name":%q}`, evil)})
	budget := setupBudget(h, sa, 100_000, 50_000)
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/expenses", session: sa,
		json: fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":%q,"amountMinor":100}`, budget, today(), evil)})

	for _, path := range []string{"/", "/expenses", "/expenses/new", "/expenses/1", "/budgets", "/departments",
		"/accounts", "/users", "/tokens", "/expenses?status=approved&page=1"} {
		r := h.do(req{host: "acme.test", path: path, session: sa})
		if r.status != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", path, r.status, r.body)
			continue
		}
		if strings.Contains(r.body, evil) {
			t.Errorf("GET %s renders user input unescaped", path)
		}
		if !strings.Contains(r.body, "--brand: #0b5fff") || !strings.Contains(r.body, "Acme Ltd") {
			t.Errorf("GET %s lacks the tenant's branding", path)
		}
		if r.header.Get("Content-Security-Policy") == "" || r.header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s lacks security headers", path)
		}
	}
	if r := h.do(req{host: "acme.test", path: "/"}); r.status != http.StatusSeeOther || r.header.Get("Location") != "/login?next=%2F" {
		t.Errorf("GET / signed out: %d %s", r.status, r.header.Get("Location"))
	}

	// A bad amount shows the form again with the message, and nothing is written.
	r := h.do(req{method: "POST", host: "acme.test", path: "/expenses", session: sa, form: url.Values{
		"budget": {fmt.Sprint(budget)}, "spent_on": {today()}, "description": {"Taxi"}, "amount": {"12.345"}}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "at most 2 decimal places") || !strings.Contains(r.body, `value="Taxi"`) {
		t.Errorf("bad amount: %d\n%s", r.status, r.body)
	}
	// A duplicate department name: the form again, after the failed INSERT, from the same transaction.
	r = h.do(req{method: "POST", host: "acme.test", path: "/departments", session: sa, form: url.Values{"name": {"research"}}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "A department with that name exists") {
		t.Errorf("duplicate department: %d\n%s", r.status, r.body)
	}

	// Members: no admin pages.
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/users", session: sa,
		json: `{"email":"max@acme.test","role":"member","password":"max-password-1"}`})
	sm := h.login("acme.test", "max@acme.test", "max-password-1")
	for _, path := range []string{"/users", "/accounts", "/departments"} {
		if r := h.do(req{host: "acme.test", path: path, session: sm}); r.status != http.StatusForbidden {
			t.Errorf("member GET %s: %d, want 403", path, r.status)
		}
	}
	if r := h.do(req{host: "acme.test", path: "/api/v1/users", session: sm}); r.status != http.StatusForbidden {
		t.Errorf("member GET /api/v1/users: %d", r.status)
	}
	// A member without a department has no budget to spend from.
	r = h.do(req{method: "POST", host: "acme.test", path: "/api/v1/expenses", session: sm, json: fmt.Sprintf(
		`{"budgetId":%d,"spentOn":%q,"description":"x","amountMinor":100}`, budget, today())})
	if r.status != http.StatusForbidden {
		t.Errorf("member spending another department's budget: %d %s", r.status, r.body)
	}
}
