package http_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/internal/registry"
)

// The Host header picks the tenant: case, port and a trailing dot do not matter; an unknown host gets
// a 404 without touching the database.
func TestServer_routing(t *testing.T) {
	h := newHarness(t, options{})
	for _, host := range []string{"acme.test", "ACME.Test", "acme.test:8443", "acme.test.", "Expenses.ACME.test.:80"} {
		r := h.do(req{host: host, path: "/login"})
		if r.status != http.StatusOK || !strings.Contains(r.body, "Acme Ltd") {
			t.Errorf("GET /login on %q: %d, want the Acme sign-in page", host, r.status)
		}
	}
	before := h.db.AcquireCount()
	for _, host := range []string{"unknown.test", "acme.test.evil.com", "evil.com", "'; DROP TABLE users; --", "", "[::1]:80"} {
		r := h.do(req{host: host, path: "/"})
		if r.status != http.StatusNotFound && r.status != http.StatusBadRequest {
			t.Errorf("GET / on %q: %d, want 404", host, r.status)
		}
		if strings.Contains(r.body, "Acme") || strings.Contains(r.body, "Globex") {
			t.Errorf("GET / on %q shows a tenant", host)
		}
	}
	if after := h.db.AcquireCount(); after != before {
		t.Errorf("unknown hosts took %d database connections, want 0", after-before)
	}
	if r := h.do(req{host: "anything", path: "/healthz"}); r.status != http.StatusOK {
		t.Errorf("/healthz: %d", r.status)
	}
	if r := h.do(req{host: "anything", path: "/readyz"}); r.status != http.StatusOK {
		t.Errorf("/readyz: %d %s", r.status, r.body)
	}
}

// Suspended tenants, ones being set up and ones whose schema is behind this build answer 503.
func TestServer_unavailableTenants(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	check := func(state string, version int64, want string) {
		t.Helper()
		if err := h.env.Admin.SetState(ctx, h.a.Schema, state, version); err != nil {
			t.Fatal(err)
		}
		h.sync()
		for _, path := range []string{"/", "/api/v1/me"} {
			r := h.do(req{host: "acme.test", path: path})
			if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, want) || r.header.Get("Retry-After") == "" {
				t.Errorf("%s %s v%d: %d %q, want 503 saying %q", state, path, version, r.status, r.body, want)
			}
		}
		if r := h.do(req{host: "globex.test", path: "/login"}); r.status != http.StatusOK {
			t.Errorf("another tenant is affected: %d", r.status)
		}
	}
	version := latest()
	check(registry.StateSuspended, version, "suspended")
	check(registry.StateProvisioning, 0, "being set up")
	check(registry.StateActive, version-1, "upgrading")
}

// A session or token of one tenant means nothing on another tenant's host, and ids of one tenant's
// records are not found on another's.
func TestServer_isolation(t *testing.T) {
	for _, bouncer := range []bool{false, true} {
		t.Run(fmt.Sprintf("pgbouncer=%v", bouncer), func(t *testing.T) {
			h := newHarness(t, options{bouncer: bouncer})
			sa, sb := h.loginA(), h.loginB()
			budgetA := setupBudget(h, sa, 1_000_000, 500_000)
			var ids []int64
			for i := range 3 {
				var e app.Expense
				body := h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/expenses", session: sa,
					json: fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":"Secret thing %d","amountMinor":1000}`,
						budgetA, time.Now().Format("2006-01-02"), i)})
				must(t, json.Unmarshal([]byte(body), &e))
				ids = append(ids, e.ID)
			}
			// A's session cookie on B's host: not signed in there.
			if r := h.do(req{host: "globex.test", path: "/", session: sa}); r.status != http.StatusSeeOther ||
				!strings.HasPrefix(r.header.Get("Location"), "/login") {
				t.Errorf("A's session on B's host: %d %s, want a redirect to sign in", r.status, r.header.Get("Location"))
			}
			if r := h.do(req{host: "globex.test", path: "/api/v1/expenses", session: sa}); r.status != http.StatusUnauthorized {
				t.Errorf("A's session on B's API: %d", r.status)
			}
			// A's API token on B's host.
			var tok struct{ Token string }
			must(t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: "acme.test",
				path: "/api/v1/tokens", session: sa, json: `{"name":"ci"}`})), &tok))
			if r := h.do(req{host: "acme.test", path: "/api/v1/me", token: tok.Token}); r.status != http.StatusOK {
				t.Fatalf("A's token on A: %d %s", r.status, r.body)
			}
			if r := h.do(req{host: "globex.test", path: "/api/v1/me", token: tok.Token}); r.status != http.StatusUnauthorized {
				t.Errorf("A's token on B: %d, want 401", r.status)
			}
			// A's ids on B.
			for _, id := range ids {
				r := h.do(req{host: "globex.test", path: fmt.Sprintf("/api/v1/expenses/%d", id), session: sb})
				if r.status != http.StatusNotFound || strings.Contains(r.body, "Secret") {
					t.Errorf("A's expense %d on B: %d %s, want 404", id, r.status, r.body)
				}
			}
			if body := h.api(http.StatusOK, req{host: "globex.test", path: "/api/v1/expenses", session: sb}); strings.Contains(body, "Secret") {
				t.Errorf("B's expense list shows A's data: %s", body)
			}
			// Concurrent requests of both tenants share server connections (2 through PgBouncer) and each
			// sees only its own data.
			var wg sync.WaitGroup
			errs := make(chan string, 100)
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					host, s, mine := "acme.test", sa, true
					if i%2 == 1 {
						host, s, mine = "globex.test", sb, false
					}
					r := h.do(req{host: host, path: "/api/v1/expenses", session: s})
					if r.status != http.StatusOK || strings.Contains(r.body, "Secret") != mine {
						errs <- fmt.Sprintf("%s: %d %s", host, r.status, r.body)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
}

// setupBudget creates a department, an account and this month's budget through the API and returns
// the budget's id.
func setupBudget(h *harness, session string, accountMinor, budgetMinor int64) int64 {
	const host = "acme.test"
	h.t.Helper()
	var d app.Department
	must(h.t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: host, path: "/api/v1/departments",
		session: session, json: `{"name":"Research"}`})), &d))
	var a app.Account
	must(h.t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: host, path: "/api/v1/accounts",
		session: session, json: fmt.Sprintf(`{"name":"Grant 2026","totalMinor":%d}`, accountMinor)})), &a))
	var b app.Budget
	must(h.t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: host, path: "/api/v1/budgets",
		session: session, json: fmt.Sprintf(`{"departmentId":%d,"accountId":%d,"month":%q,"amountMinor":%d}`,
			d.ID, a.ID, month(time.Now()), budgetMinor)})), &b))
	return b.ID
}

// The whole flow over the API: budgets within accounts, approval above the threshold, balances that
// follow edits without double counting, pagination and CSV.
func TestServer_expenseFlow(t *testing.T) {
	h := newHarness(t, options{})
	sa := h.loginA()
	budget := setupBudget(h, sa, 1_000_000, 600_000)

	// The account holds 10,000.00; 6,000.00 is committed; 5,000.00 more would over-commit it.
	var accounts struct{ Items []app.Account }
	must(t, json.Unmarshal([]byte(h.api(http.StatusOK, req{host: "acme.test", path: "/api/v1/accounts", session: sa})), &accounts))
	r := h.do(req{method: "POST", host: "acme.test", path: "/api/v1/budgets", session: sa, json: fmt.Sprintf(
		`{"departmentId":1,"accountId":%d,"month":%q,"amountMinor":500000}`, accounts.Items[0].ID, month(time.Now().AddDate(0, 1, 0)))})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "4,000.00 EUR") {
		t.Fatalf("over-committing budget: %d %s, want 409 naming what is left", r.status, r.body)
	}

	// A member of Research records expenses; above 500.00 EUR they wait.
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/users", session: sa,
		json: `{"email":"mia@acme.test","name":"Mia","role":"member","password":"mia-password-1","departmentId":1}`})
	sm := h.login("acme.test", "mia@acme.test", "mia-password-1")
	today := time.Now().Format("2006-01-02")
	create := func(amount int64, desc string) app.Expense {
		var e app.Expense
		must(t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/expenses",
			session: sm, json: fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":%q,"amountMinor":%d}`, budget, today, desc, amount)})), &e))
		return e
	}
	small := create(12_345, `Robert'); DROP TABLE expenses;-- "coffee"`)
	big := create(75_000, "Laptop")
	if small.Status != app.ExpenseApproved || big.Status != app.ExpensePending {
		t.Fatalf("statuses %s/%s, want approved/pending", small.Status, big.Status)
	}
	if small.Description != `Robert'); DROP TABLE expenses;-- "coffee"` {
		t.Fatalf("description came back as %q", small.Description)
	}
	// Members cannot approve; admins can.
	if r := h.do(req{method: "POST", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d/approve", big.ID), session: sm}); r.status != http.StatusForbidden {
		t.Fatalf("member approving: %d", r.status)
	}
	dash := dashboard(h, sa)
	if dash.PendingCount != 1 || dash.Departments[0].SpentMinor != 12_345 || dash.Departments[0].PendingMinor != 75_000 {
		t.Fatalf("dashboard before approval: %+v", dash)
	}
	h.api(http.StatusOK, req{method: "POST", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d/approve", big.ID), session: sa})
	if r := h.do(req{method: "POST", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d/approve", big.ID), session: sa}); r.status != http.StatusConflict {
		t.Fatalf("approving twice: %d", r.status)
	}
	dash = dashboard(h, sa)
	if dash.PendingCount != 0 || dash.Departments[0].SpentMinor != 87_345 || dash.Departments[0].BudgetMinor != 600_000 {
		t.Fatalf("dashboard after approval: %+v", dash.Departments)
	}
	last := dash.Last12Months[len(dash.Last12Months)-1]
	if len(dash.Last12Months) != 12 || last.SpentMinor != 87_345 {
		t.Fatalf("12-month series: %+v", dash.Last12Months)
	}
	// Editing the amount changes the balance once; raising it above the threshold makes it wait again.
	h.api(http.StatusOK, req{method: "PATCH", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d", small.ID), session: sm,
		json: `{"amountMinor":20000}`})
	h.api(http.StatusOK, req{method: "PATCH", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d", small.ID), session: sm,
		json: `{"amountMinor":20000}`})
	if d := dashboard(h, sa).Departments[0]; d.SpentMinor != 95_000 {
		t.Fatalf("spent after editing twice: %d, want 95000", d.SpentMinor)
	}
	h.api(http.StatusOK, req{method: "PATCH", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d", small.ID), session: sm,
		json: `{"amountMinor":60000}`})
	if d := dashboard(h, sa).Departments[0]; d.SpentMinor != 75_000 || d.PendingMinor != 60_000 {
		t.Fatalf("after raising above the threshold: %+v", d)
	}
	// Rejecting needs a reason.
	if r := h.do(req{method: "POST", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d/reject", small.ID), session: sa}); r.status != http.StatusBadRequest {
		t.Fatalf("reject without reason: %d %s", r.status, r.body)
	}
	h.api(http.StatusOK, req{method: "POST", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d/reject", small.ID), session: sa,
		json: `{"reason":"Not a business expense"}`})
	// Deleting removes it from the balance.
	h.api(http.StatusNoContent, req{method: "DELETE", host: "acme.test", path: fmt.Sprintf("/api/v1/expenses/%d", big.ID), session: sa})
	if d := dashboard(h, sa).Departments[0]; d.SpentMinor != 0 || d.PendingMinor != 0 {
		t.Fatalf("after reject and delete: %+v", d)
	}

	// Pagination.
	for i := range 7 {
		create(int64(100+i), fmt.Sprintf("item %d", i))
	}
	var page struct {
		Items                []app.Expense
		Page, PerPage, Total int
	}
	must(t, json.Unmarshal([]byte(h.api(http.StatusOK, req{host: "acme.test", path: "/api/v1/expenses?per_page=3&page=3", session: sa})), &page))
	if page.Total != 8 || len(page.Items) != 2 || page.Page != 3 {
		t.Fatalf("page 3 of 3: total %d, %d items", page.Total, len(page.Items))
	}
	if r := h.do(req{host: "acme.test", path: "/api/v1/expenses?per_page=0", session: sa}); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body, `"code":"invalid"`) {
		t.Fatalf("bad per_page: %d %s", r.status, r.body)
	}
	// CSV: every matching row, amounts in the tenant's currency, formulas defused.
	csvBody := h.do(req{host: "acme.test", path: "/expenses.csv?status=approved", session: sa}).body
	rows, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	must(t, err)
	if len(rows) != 8 || rows[0][0] != "id" || rows[1][7] != "EUR" {
		t.Fatalf("csv: %d rows: %v", len(rows), rows)
	}
}

func dashboard(h *harness, session string) app.Dashboard {
	h.t.Helper()
	var d app.Dashboard
	must(h.t, json.Unmarshal([]byte(h.api(http.StatusOK, req{host: "acme.test", path: "/api/v1/dashboard", session: session})), &d))
	return d
}

// Sign-in: wrong passwords, rate limiting, cookie attributes, sign-out.
func TestServer_login(t *testing.T) {
	h := newHarness(t, options{secure: true})
	r := h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {h.a.AdminEmail}, "password": {"wrong"}}})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong email or password") {
		t.Fatalf("wrong password: %d", r.status)
	}
	r = h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {h.a.AdminEmail}, "password": {h.a.AdminPassword}}})
	cookie := r.header.Get("Set-Cookie")
	for _, attr := range []string{"__Host-tenantry_session=", "HttpOnly", "Secure", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("session cookie %q lacks %s", cookie, attr)
		}
	}
	// Five failures go through, then the address is slowed down, on this tenant only.
	var limited int
	for range 12 {
		r := h.do(req{method: "POST", host: "globex.test", path: "/login", form: url.Values{"email": {"x@globex.test"}, "password": {"nope"}}})
		if r.status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("12 failed sign-ins in a row were never rate limited")
	}
}

// Browsers' cross-site form posts are refused; same-origin ones and API clients are not.
func TestServer_crossOriginProtection(t *testing.T) {
	h := newHarness(t, options{})
	sa := h.loginA()
	r := h.do(req{method: "POST", host: "acme.test", path: "/departments", session: sa, form: url.Values{"name": {"Evil"}},
		header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}})
	if r.status != http.StatusForbidden {
		t.Fatalf("cross-site post: %d, want 403", r.status)
	}
	r = h.do(req{method: "POST", host: "acme.test", path: "/departments", session: sa, form: url.Values{"name": {"Good"}},
		header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://acme.test"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("same-origin post: %d %s", r.status, r.body)
	}
	body := h.api(http.StatusOK, req{host: "acme.test", path: "/api/v1/departments", session: sa})
	if strings.Contains(body, "Evil") || !strings.Contains(body, "Good") {
		t.Fatalf("departments: %s", body)
	}
}

// The registry follows the operator through LISTEN/NOTIFY within a second, and re-reads everything
// after losing its connection.
func TestRegistry_listen(t *testing.T) {
	h := newHarness(t, options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	syncs := h.reg.Syncs()
	go func() { _ = h.reg.Run(ctx, h.env.Channel, connectFunc(h.env.AppURL), discardLog()) }()
	waitFor(t, "the listener to start", func() bool { return h.reg.Syncs() > syncs })

	c, err := h.env.Provision(context.Background(), apptestTenant("initech", "initech.test"))
	must(t, err)
	waitFor(t, "a new tenant to be served", func() bool { return h.do(req{host: "initech.test", path: "/login"}).status == http.StatusOK })
	must(t, h.env.Admin.SetState(context.Background(), c.Schema, registry.StateSuspended, latest()))
	waitFor(t, "a suspension to take effect", func() bool {
		return h.do(req{host: "initech.test", path: "/login"}).status == http.StatusServiceUnavailable
	})
	must(t, h.env.Admin.Unregister(context.Background(), "test", "initech"))
	waitFor(t, "a removed tenant to go", func() bool { return h.do(req{host: "initech.test", path: "/login"}).status == http.StatusNotFound })

	// Cut the listener's connection, change the registry while it is away: it catches up on reconnect.
	syncs = h.reg.Syncs()
	adminExec(t, h, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'tenantry-registry' AND datname = current_database()`)
	_, err = h.env.Provision(context.Background(), apptestTenant("hooli", "hooli.test"))
	must(t, err)
	waitFor(t, "the listener to reconnect", func() bool { return h.reg.Syncs() > syncs })
	waitFor(t, "a tenant added while disconnected to be served", func() bool {
		return h.do(req{host: "hooli.test", path: "/login"}).status == http.StatusOK
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
