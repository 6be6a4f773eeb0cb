package http_test

// Hostile input: what a tenant's user, or anyone on the internet, may send. See docs/security.md.

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app/apptest"
	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/test/utils/monitoring"
)

// Sign-in never sends the browser to another host, however the target is spelled.
func TestServer_login_noOpenRedirect(t *testing.T) {
	h := newHarness(t, options{})
	for _, next := range []string{"//evil.com", "/\t/evil.com", "/\n/evil.com", "/\\evil.com", "/ /evil.com",
		"https://evil.com", "/\x7f/evil.com", "\\\\evil.com"} {
		r := h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{
			"email": {h.a.AdminEmail}, "password": {h.a.AdminPassword}, "next": {next}}})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
			t.Errorf("next=%q: %d to %q, want 303 to /", next, r.status, r.header.Get("Location"))
		}
		page := h.do(req{host: "acme.test", path: "/login?next=" + url.QueryEscape(next)})
		if strings.Contains(page.body, "evil.com") {
			t.Errorf("the sign-in page carries next=%q on", next)
		}
	}
	// A path of this host stays.
	r := h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{
		"email": {h.a.AdminEmail}, "password": {h.a.AdminPassword}, "next": {"/expenses?month=2026-01"}}})
	if r.header.Get("Location") != "/expenses?month=2026-01" {
		t.Errorf("a local next became %q", r.header.Get("Location"))
	}
}

// Text PostgreSQL cannot store (a NUL, invalid UTF-8) gets a 400 that says so, in forms, JSON and query
// strings alike, never a 500.
func TestServer_invalidTextIs400(t *testing.T) {
	h := newHarness(t, options{})
	sa := h.loginA()
	cases := []req{
		{method: "POST", path: "/login", form: url.Values{"email": {"admin\x00@acme.test"}, "password": {"x"}}},
		{method: "POST", path: "/login", form: url.Values{"email": {"admin\xff@acme.test"}, "password": {"x"}}},
		{method: "POST", path: "/api/v1/departments", session: sa, json: `{"name":"R\u0000D"}`},
		{method: "POST", path: "/api/v1/departments", session: sa, json: "{\"name\":\"R\xffD\"}"},
		{method: "POST", path: "/departments", session: sa, form: url.Values{"name": {"R\x00D"}}},
		{path: "/api/v1/expenses?q=%00", session: sa},
		{path: "/expenses?q=%ff", session: sa},
	}
	for _, c := range cases {
		c.host = "acme.test"
		if c.method == "POST" && c.form != nil {
			c.header = map[string]string{"Origin": "http://acme.test"}
		}
		r := h.do(c)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "UTF-8") {
			t.Errorf("%s %s (%q%s): %d %s, want 400 naming the problem", c.method, c.path, c.form, c.json, r.status, r.body)
		}
	}
}

// A user whose email starts like a formula shows in the CSV export defused.
func TestServer_expensesCSV_formulaInEmail(t *testing.T) {
	h := newHarness(t, options{})
	sa := h.loginA()
	budget := setupBudget(h, sa, 1_000_000, 500_000)
	evil := "=hyperlink(1)@acme.test"
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/users", session: sa,
		json: fmt.Sprintf(`{"email":%q,"name":"Eve","role":"admin","password":"correct horse battery"}`, evil)})
	se := h.login("acme.test", evil, "correct horse battery")
	h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/expenses", session: se,
		json: fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":"Lunch","amountMinor":1000}`, budget, time.Now().Format("2006-01-02"))})
	body := h.api(http.StatusOK, req{host: "acme.test", path: "/expenses.csv", session: sa})
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	must(t, err)
	col := -1
	for i, name := range rows[0] {
		if name == "recorded_by" {
			col = i
		}
	}
	if len(rows) != 2 || col < 0 || rows[1][col] != "'"+evil {
		t.Fatalf("recorded_by of the formula-like email: %q, want %q", rows, "'"+evil)
	}
}

// Whatever method a client sends, the metrics label takes one of a few values.
func TestServer_metrics_methodLabelBounded(t *testing.T) {
	h := newHarness(t, options{})
	for i := range 5 {
		h.do(req{method: fmt.Sprintf("EVIL%d", i), host: "acme.test", path: "/login"})
	}
	rec := httptest.NewRecorder()
	h.app.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "EVIL") || !strings.Contains(rec.Body.String(), `method="other"`) {
		t.Fatalf("metrics carry a client's method names:\n%s", rec.Body.String())
	}
}

// Behind a trusted proxy, sign-in limits apply per client (X-Forwarded-For), so one client's failures
// do not slow the other clients down. From an untrusted peer, X-Forwarded-For is ignored.
func TestServer_login_limitsPerClientBehindProxy(t *testing.T) {
	h := newHarness(t, options{proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	try := func(client, email, pw string) int {
		return h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{
			"email": {email}, "password": {pw}}, header: map[string]string{"X-Forwarded-For": "203.0.113.9, " + client}}).status
	}
	limited := false
	for i := range 15 {
		if try("198.51.100.1", fmt.Sprintf("guess%d@acme.test", i), "wrong") == http.StatusTooManyRequests {
			limited = true
		}
	}
	if !limited {
		t.Fatal("15 wrong passwords from one client were never limited")
	}
	if got := try("198.51.100.2", h.a.AdminEmail, h.a.AdminPassword); got != http.StatusSeeOther {
		t.Fatalf("the admin signing in from another client after the flood: %d, want 303", got)
	}

	// Without trusted proxies, the header is the client's word only: the peer address counts.
	u := newHarness(t, options{})
	for i := range 15 {
		u.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {"x@acme.test"}, "password": {"x"}},
			header: map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)}})
	}
	r := u.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {"y@acme.test"}, "password": {"y"}},
		header: map[string]string{"X-Forwarded-For": "198.51.100.99"}})
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("an untrusted X-Forwarded-For escaped the limit: %d", r.status)
	}
}

// One tenant's slow CSV reader and sign-in flood do not take the connections another tenant needs:
// the export is written after its transaction, argon2id runs outside any, and each tenant holds at most
// its share of the pool.
func TestServer_noisyTenantDoesNotStarveOthers(t *testing.T) {
	h := newHarness(t, options{pool: postgres.Options{MaxConns: 2, PoolShards: 1},
		proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	ctx := context.Background()
	sa := h.loginA()
	budget := setupBudget(h, sa, 1_000_000_000, 500_000_000)
	// Enough expenses that the export fills every socket buffer while its reader stalls.
	admin, err := pgx.Connect(ctx, h.env.AdminURL)
	must(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.expenses (budget_id, spent_on, description, note, amount_minor, created_by)
		SELECT %d, current_date, 'Expense number ' || i || repeat(' padding', 20), repeat('note ', 20), 1, 1
		FROM generate_series(1, 60000) i`, pgx.Identifier{h.a.Schema}.Sanitize(), budget))
	must(t, err)

	// Two slow readers, as many as the pool has connections: each takes the headers and one byte, then
	// stops reading.
	var stalled []io.ReadCloser
	for range 2 {
		hr, _ := http.NewRequest("GET", h.srv.URL+"/expenses.csv", nil)
		hr.Host = "acme.test"
		hr.AddCookie(&http.Cookie{Name: "tenantry_session", Value: sa})
		res, err := http.DefaultClient.Do(hr)
		must(t, err)
		t.Cleanup(func() { _ = res.Body.Close() })
		// The first stalled reader must not hold the tenant's one connection slot: the second is served.
		if res.StatusCode != http.StatusOK {
			t.Fatalf("export %d while another reader stalls: %d", len(stalled)+1, res.StatusCode)
		}
		if _, err := io.ReadFull(res.Body, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, res.Body)
	}

	// The sign-in flood: each attempt from an address of its own (behind the trusted proxy), for an
	// account of its own of A with a wrong password, so that none is slowed down by the sign-in guard and
	// each checks a password (argon2id).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var attempts, limited atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				form := url.Values{"email": {fmt.Sprintf("flood%d-%d@acme.test", w, i)}, "password": {"wrong password"}}
				r, _ := http.NewRequest("POST", h.srv.URL+"/login", strings.NewReader(form.Encode()))
				r.Host = "acme.test"
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", w, i/250%250, i%250))
				if res, err := c.Do(r); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					_ = res.Body.Close()
					attempts.Add(1)
					if res.StatusCode == http.StatusTooManyRequests {
						limited.Add(1)
					}
				}
			}
		}()
	}
	// Meanwhile tenant B, and tenant A's own signed-in admin, are served: the sign-ins hold a pooled
	// connection only for their two short transactions, never while argon2id runs.
	sb := h.loginB()
	worst := map[string]time.Duration{}
	patient := &http.Client{Timeout: 10 * time.Second}
	for i := range 30 {
		host, session := "globex.test", sb
		if i%2 == 1 {
			host, session = "acme.test", sa
		}
		start := time.Now()
		r, _ := http.NewRequest("GET", h.srv.URL+"/api/v1/me", nil)
		r.Host = host
		r.AddCookie(&http.Cookie{Name: "tenantry_session", Value: session})
		res, err := patient.Do(r)
		if err != nil {
			t.Fatalf("%s during A's flood: %v", host, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s during A's flood: %d", host, res.StatusCode)
		}
		worst[host] = max(worst[host], time.Since(start))
	}
	close(stop)
	wg.Wait()
	t.Logf("slowest requests during A's slow export and sign-in flood (%d sign-ins, %d limited): %v",
		attempts.Load(), limited.Load(), worst)
	if limited.Load() > 0 || attempts.Load() < 16 {
		t.Fatalf("the flood made %d sign-ins, %d of them rate-limited: it checked too few passwords to prove anything",
			attempts.Load(), limited.Load())
	}
	for host, d := range worst {
		if d > 3*time.Second {
			t.Errorf("%s waited %s for a connection: A's noise starved it", host, d)
		}
	}
	// The stalled export still arrives whole once read.
	rest, err := io.ReadAll(stalled[0])
	must(t, err)
	if n := strings.Count(string(rest), "\n"); n < 60000 {
		t.Fatalf("the export has %d lines, want every expense", n)
	}
}

// A sign-in checks the password (argon2id, tens of milliseconds) while it holds no pooled connection:
// between its two short transactions, never inside one. (The flood above shows what that buys under
// load; this shows the order itself, whatever the timing.)
func TestServer_signInChecksPasswordHoldingNoConnection(t *testing.T) {
	h := newHarness(t, options{pool: postgres.Options{MaxConns: 2, PoolShards: 1}})
	var held []int32
	stop := apphttp.WatchPasswordChecks(func() { held = append(held, h.db.Pool().Stat().AcquiredConns()) })
	defer stop()
	h.loginA()
	h.do(req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {h.a.AdminEmail}, "password": {"wrong password"}}})
	if len(held) != 2 {
		t.Fatalf("%d password checks watched, want 2 (a right password and a wrong one)", len(held))
	}
	for i, n := range held {
		if n != 0 {
			t.Errorf("sign-in %d checked the password while holding %d pooled connection(s)", i+1, n)
		}
	}
}

// scrape returns the app's metrics as Prometheus exposition text.
func (h *harness) scrape() string {
	rec := httptest.NewRecorder()
	h.app.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// Per-tenant counters take at most the configured number of tenants' labels, whatever hosts clients
// send: the rest share "other", and unknown hosts count for no tenant.
func TestServer_metrics_perTenantBounded(t *testing.T) {
	h := newHarness(t, options{tenants: 1})
	for range 3 {
		h.do(req{method: "GET", host: "acme.test", path: "/login"})
	}
	h.do(req{method: "GET", host: "globex.test", path: "/login"})
	for i := range 5 {
		h.do(req{method: "GET", host: fmt.Sprintf("nobody%d.test", i), path: "/login"})
	}
	body := h.scrape()
	for _, want := range []string{
		`tenantry_app_tenant_requests_total{tenant="` + apptest.Namespace + `/acme"} 3`,
		`tenantry_app_tenant_requests_total{tenant="other"} 1`,
		`tenantry_app_tenants 2`,
		`tenantry_app_database_up 1`,
		`tenantry_app_db_pool_connections{state="max"} 8`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "nobody") || strings.Count(body, "tenantry_app_tenant_requests_total{") != 2 {
		t.Fatalf("per-tenant metrics are not bounded:\n%s", body)
	}
	// Off by default: no per-tenant series at all.
	if off := newHarness(t, options{}).scrape(); strings.Contains(off, "tenantry_app_tenant_requests_total") {
		t.Fatal("per-tenant metrics without TenantMetrics")
	}
}

// Every app metric that the shipped alerts and dashboard name (config/prometheus, config/grafana) is
// on the app's live /metrics.
func TestServer_metrics_monitoringNamesExist(t *testing.T) {
	h := newHarness(t, options{tenants: 10})
	h.do(req{method: "GET", host: "acme.test", path: "/login"})
	missing, checked, err := monitoring.Unexposed("../..", "app", strings.NewReader(h.scrape()))
	must(t, err)
	for _, m := range missing {
		t.Errorf("%s, which the app does not expose", m)
	}
	if checked == 0 {
		t.Fatal("no app metric named in the rules or the dashboard")
	}
}

// Password checks and CSV exports run at most Config.MaxHashes and Config.MaxExports at once, whoever
// sends them: what argon2id and an export's rows hold in memory is bounded. A request that finds no slot
// free waits (holding no connection), then gets a 503 with Retry-After; the work under way finishes.
func TestServer_costlyWorkIsBounded(t *testing.T) {
	defer apphttp.SetSlotWait(300 * time.Millisecond)()
	h := newHarness(t, options{maxHashes: 1, maxExports: 1})
	session := h.loginA()

	var checks atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	stop := apphttp.WatchPasswordChecks(func() {
		if checks.Add(1) == 1 {
			close(entered)
			<-release
		}
	})
	defer stop()
	first := make(chan int, 1)
	go func() {
		first <- post(h, "acme.test", "/login", url.Values{"email": {h.a.AdminEmail}, "password": {h.a.AdminPassword}})
	}()
	<-entered
	r := h.do(req{method: "POST", host: "globex.test", path: "/login", form: url.Values{"email": {h.b.AdminEmail}, "password": {h.b.AdminPassword}}})
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || checks.Load() != 1 {
		t.Errorf("a sign-in while the one hash slot is taken: %d (Retry-After %q), %d checks; want 503 with Retry-After, 1 check",
			r.status, r.header.Get("Retry-After"), checks.Load())
	}
	close(release)
	if status := <-first; status != http.StatusSeeOther {
		t.Errorf("the sign-in that held the slot: %d, want 303", status)
	}

	// An export held up inside its transaction (its table locked) keeps the one export slot.
	lock, err := pgx.Connect(context.Background(), h.env.AdminURL)
	must(t, err)
	defer lock.Close(context.Background())
	tx, err := lock.Begin(context.Background())
	must(t, err)
	_, err = tx.Exec(context.Background(), "LOCK TABLE "+pgx.Identifier{h.a.Schema, "expenses"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE")
	must(t, err)
	exported := make(chan int, 1)
	go func() { exported <- get(h, "acme.test", "/expenses.csv", session) }()
	must(t, waitUntil(10*time.Second, func() bool {
		var waiting bool
		_ = lock.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted)").Scan(&waiting)
		return waiting
	}))
	r = h.do(req{host: "globex.test", path: "/expenses.csv", session: h.loginB()})
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("an export while the one export slot is taken: %d (Retry-After %q), want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	must(t, tx.Rollback(context.Background()))
	if status := <-exported; status != http.StatusOK {
		t.Errorf("the export that held the slot: %d, want 200", status)
	}
	if r := h.do(req{host: "globex.test", path: "/expenses.csv", session: h.loginB()}); r.status != http.StatusOK {
		t.Errorf("an export once the slot is free: %d, want 200", r.status)
	}
}

// post sends a form from another goroutine than the test's, and returns the status.
func post(h *harness, host, path string, form url.Values) int {
	hr, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
	hr.Host = host
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return send(h, hr)
}

// get sends a GET with a session from another goroutine than the test's, and returns the status.
func get(h *harness, host, path, session string) int {
	hr, _ := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
	hr.Host = host
	hr.AddCookie(&http.Cookie{Name: "tenantry_session", Value: session})
	return send(h, hr)
}

func send(h *harness, hr *http.Request) int {
	res, err := h.client.Do(hr)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// Failed sign-ins slow guessing down and lock no one out. A flood at an account from many addresses
// slows every browser new to that account, by delays that double up to a minute, never more; the
// account's owner, whose browser signed in before (its device cookie), signs in during the flood. A
// device cookie is good for its own account only. An address many failures came from is slowed, never
// locked: once its delay is up, an attempt goes through.
func TestServer_login_slowsGuessingLocksNoOneOut(t *testing.T) {
	h := newHarness(t, options{proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	clock := time.Now()
	apphttp.SetSignInClock(h.app, func() time.Time { return clock })
	try := func(client, email, pw, device string) resp {
		r := req{method: "POST", host: "acme.test", path: "/login", form: url.Values{"email": {email}, "password": {pw}},
			header: map[string]string{"X-Forwarded-For": client}}
		if device != "" {
			r.header["Cookie"] = "tenantry_device=" + device
		}
		return h.do(r)
	}
	owner := try("198.51.100.7", h.a.AdminEmail, h.a.AdminPassword, "")
	var device string
	for _, c := range (&http.Response{Header: owner.header}).Cookies() {
		if c.Name == "tenantry_device" {
			device = c.Value
		}
	}
	if owner.status != http.StatusSeeOther || device == "" {
		t.Fatalf("the owner's first sign-in: %d, device cookie %q", owner.status, device)
	}

	// The flood: wrong passwords at the admin, each from an address of its own.
	var waits []int
	for i := range 20 {
		r := try(fmt.Sprintf("203.0.113.%d", i), h.a.AdminEmail, "wrong password", "")
		if r.status == http.StatusTooManyRequests {
			after, err := strconv.Atoi(r.header.Get("Retry-After"))
			if err != nil || after < 1 || after > 60 {
				t.Fatalf("Retry-After %q, want 1 to 60 seconds", r.header.Get("Retry-After"))
			}
			waits = append(waits, after)
			clock = clock.Add(time.Duration(after) * time.Second) // the attacker waits it out
		}
	}
	if len(waits) == 0 {
		t.Fatal("20 wrong passwords at one account were never slowed down")
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] < waits[i-1] {
			t.Errorf("delays %v shrink while the failures go on", waits)
		}
	}
	if last := waits[len(waits)-1]; last != 60 {
		t.Errorf("delays %v: want them to double up to a minute", waits)
	}
	// The attacker's next guess, its delay up, is checked, and sets the next delay going.
	if r := try("203.0.113.99", h.a.AdminEmail, "wrong password", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("a guess once the delay is up: %d, want 401 (checked)", r.status)
	}
	// A browser new to the account is slowed down; the owner's is not.
	if r := try("198.51.100.8", h.a.AdminEmail, h.a.AdminPassword, ""); r.status != http.StatusTooManyRequests {
		t.Errorf("a new browser at the flooded account: %d, want 429", r.status)
	}
	if r := try("198.51.100.7", h.a.AdminEmail, h.a.AdminPassword, device); r.status != http.StatusSeeOther {
		t.Errorf("the owner's browser during the flood: %d, want 303", r.status)
	}
	// The owner's device cookie is no pass for another account.
	slowed := false
	for i := range 10 {
		if try("198.51.100.7", "member@acme.test", fmt.Sprintf("guess %d", i), device).status == http.StatusTooManyRequests {
			slowed = true
		}
	}
	if !slowed {
		t.Error("guesses at another account with the owner's device cookie were never slowed down")
	}
	// One address, many failures: slowed, not locked.
	shared := "192.0.2.1"
	var r resp
	for i := range 12 {
		r = try(shared, fmt.Sprintf("user%d@acme.test", i), "wrong password", "")
	}
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("12 failures from one address: %d, want 429", r.status)
	}
	after, _ := strconv.Atoi(r.header.Get("Retry-After"))
	clock = clock.Add(time.Duration(after) * time.Second)
	if r := try(shared, "someone@acme.test", "wrong password", ""); r.status != http.StatusUnauthorized {
		t.Errorf("an attempt from the busy address once its delay is up: %d, want 401 (checked)", r.status)
	}
}

// A burst of parallel guesses at one account, each from an address of its own, is counted as it is let
// through: no more than the free ones get a password check, whatever their number.
func TestServer_login_burstIsCountedAsItGoes(t *testing.T) {
	h := newHarness(t, options{proxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, maxHashes: 64})
	statuses := make(chan int, 30)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hr, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/login", strings.NewReader(url.Values{
				"email": {h.a.AdminEmail}, "password": {"wrong password"}}.Encode()))
			hr.Host = "acme.test"
			hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			hr.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
			statuses <- send(h, hr)
		}()
	}
	wg.Wait()
	close(statuses)
	checked := 0
	for s := range statuses {
		if s == http.StatusUnauthorized {
			checked++
		}
	}
	if checked > 5 {
		t.Fatalf("%d of 30 parallel guesses at one account had their password checked, want at most 5", checked)
	}
}
