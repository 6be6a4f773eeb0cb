// Package http serves the expense app: server-rendered HTML and a JSON API over the same operations,
// for every tenant at once. The tenant comes from the Host header through the in-memory registry; each
// request that touches tenant data runs in one transaction as that tenant (postgres.DB.InTenant).
package http

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

// Config wires a Server.
type Config struct {
	DB       *postgres.DB
	Registry *postgres.Registry
	Log      *slog.Logger
	// SchemaVersion is the tenant schema version this build needs; a tenant behind it gets 503.
	SchemaVersion int64
	// SecureCookies marks the session cookie Secure (HTTPS only). Off only for local development.
	SecureCookies bool
	// SessionTTL is how long a sign-in lasts (default 12 hours).
	SessionTTL time.Duration
	// DevHostSuffix, when set (make dev sets ".localhost"), also serves each tenant at <name><suffix>.
	DevHostSuffix string
	// TrustedProxies are the addresses of proxies (the ingress controller) whose X-Forwarded-For names
	// the client; requests from anywhere else are taken to come from their peer address.
	TrustedProxies []netip.Prefix
	// TenantMetrics, when above 0, counts requests and server errors per tenant for that many tenants
	// (by namespace and name); the tenants beyond them are counted together as "other".
	TenantMetrics int
	// DeviceKey signs the device cookies of browsers that signed in (signInGuard). Every replica must
	// have the same; empty makes one for this replica alone.
	DeviceKey []byte
	// MaxHashes bounds the password hashes and checks run at once (0: two per CPU), MaxExports the CSV
	// exports built at once (0: 4): the memory they take is bounded whatever clients send.
	MaxHashes, MaxExports int
}

// Server is the app's HTTP handler.
type Server struct {
	cfg     Config
	handler http.Handler
	guard   *signInGuard
	metrics *Metrics
	hashes  slots // password hashes and checks (Config.MaxHashes)
	exports slots // CSV exports (Config.MaxExports)
}

// New returns a Server with every route registered.
func New(cfg Config) *Server {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxHashes <= 0 {
		cfg.MaxHashes = 2 * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxExports <= 0 {
		cfg.MaxExports = 4
	}
	s := &Server{cfg: cfg, guard: newSignInGuard(cfg.DeviceKey), metrics: NewMetrics(cfg.TenantMetrics),
		hashes: newSlots(cfg.MaxHashes), exports: newSlots(cfg.MaxExports)}
	s.metrics.watch(cfg.DB, cfg.Registry)
	s.handler = s.routes()
	return s
}

// Metrics returns the server's Prometheus metrics, for a separate listener.
func (s *Server) Metrics() *Metrics { return s.metrics }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// routes registers every route in one place.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)

	t := http.NewServeMux() // routes that belong to a tenant
	t.Handle("GET /static/", staticHandler())
	t.HandleFunc("GET /login", s.loginPage)
	t.HandleFunc("POST /login", s.login)
	t.HandleFunc("POST /logout", s.logout)
	t.HandleFunc("GET /{$}", s.page(s.dashboardPage))
	t.HandleFunc("GET /expenses", s.page(s.expensesPage))
	t.HandleFunc("GET /expenses.csv", s.bounded(s.exports, s.page(s.expensesCSV)))
	t.HandleFunc("GET /expenses/new", s.page(s.newExpensePage))
	t.HandleFunc("POST /expenses", s.page(s.createExpenseForm))
	t.HandleFunc("GET /expenses/{id}", s.page(s.editExpensePage))
	t.HandleFunc("POST /expenses/{id}", s.page(s.updateExpenseForm))
	t.HandleFunc("POST /expenses/{id}/delete", s.page(s.deleteExpenseForm))
	t.HandleFunc("POST /expenses/{id}/decide", s.page(s.decideExpenseForm))
	t.HandleFunc("GET /budgets", s.page(s.budgetsPage))
	t.HandleFunc("POST /budgets", s.admin(s.createBudgetForm))
	t.HandleFunc("GET /departments", s.admin(s.departmentsPage))
	t.HandleFunc("POST /departments", s.admin(s.createDepartmentForm))
	t.HandleFunc("GET /accounts", s.admin(s.accountsPage))
	t.HandleFunc("POST /accounts", s.admin(s.createAccountForm))
	t.HandleFunc("GET /users", s.admin(s.usersPage))
	t.HandleFunc("POST /users", s.hashingPassword(s.admin(s.createUserForm), false))
	t.HandleFunc("POST /users/{id}", s.admin(s.updateUserForm))
	t.HandleFunc("GET /tokens", s.page(s.tokensPage))
	t.HandleFunc("POST /tokens", s.page(s.createTokenForm))
	t.HandleFunc("POST /tokens/{id}/revoke", s.page(s.revokeTokenForm))

	t.HandleFunc("GET /api/v1/me", s.api(s.apiMe))
	t.HandleFunc("GET /api/v1/dashboard", s.api(s.apiDashboard))
	t.HandleFunc("GET /api/v1/departments", s.api(s.apiDepartments))
	t.HandleFunc("POST /api/v1/departments", s.api(adminOnly(s.apiCreateDepartment)))
	t.HandleFunc("GET /api/v1/accounts", s.api(adminOnly(s.apiAccounts)))
	t.HandleFunc("POST /api/v1/accounts", s.api(adminOnly(s.apiCreateAccount)))
	t.HandleFunc("GET /api/v1/budgets", s.api(s.apiBudgets))
	t.HandleFunc("POST /api/v1/budgets", s.api(adminOnly(s.apiCreateBudget)))
	t.HandleFunc("GET /api/v1/expenses", s.api(s.apiExpenses))
	t.HandleFunc("POST /api/v1/expenses", s.api(s.apiCreateExpense))
	t.HandleFunc("GET /api/v1/expenses/{id}", s.api(s.apiExpense))
	t.HandleFunc("PATCH /api/v1/expenses/{id}", s.api(s.apiUpdateExpense))
	t.HandleFunc("DELETE /api/v1/expenses/{id}", s.api(s.apiDeleteExpense))
	t.HandleFunc("POST /api/v1/expenses/{id}/approve", s.api(s.apiDecide(true)))
	t.HandleFunc("POST /api/v1/expenses/{id}/reject", s.api(s.apiDecide(false)))
	t.HandleFunc("GET /api/v1/users", s.api(adminOnly(s.apiUsers)))
	t.HandleFunc("POST /api/v1/users", s.hashingPassword(s.api(adminOnly(s.apiCreateUser)), true))
	t.HandleFunc("PATCH /api/v1/users/{id}", s.api(adminOnly(s.apiUpdateUser)))
	t.HandleFunc("POST /api/v1/tokens", s.api(s.apiCreateToken))
	t.HandleFunc("DELETE /api/v1/tokens/{id}", s.api(s.apiRevokeToken))
	t.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, app.Errorf(app.ENOTFOUND, "No such API route."))
	})

	// Cross-origin protection on every state-changing request: a browser's cross-site POST is refused
	// (Sec-Fetch-Site / Origin), while API clients, which send neither header, are not affected.
	csrf := http.NewCrossOriginProtection()
	// Tell observe which tenant route matched: withTenant passes on a copy of the request, so the
	// pattern the inner mux records would not reach it.
	tenantRoutes := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info, ok := r.Context().Value(routeKey).(*requestInfo); ok {
			_, info.route = t.Handler(r)
		}
		t.ServeHTTP(w, r)
	})
	mux.Handle("/", s.withTenant(csrf.Handler(validText(tenantRoutes))))
	return s.observe(mux)
}

// Error maps an app error code to its HTTP status: the one place this happens.
func statusOf(code string) int {
	switch code {
	case app.EINVALID:
		return http.StatusBadRequest
	case app.ENOTFOUND:
		return http.StatusNotFound
	case app.ECONFLICT:
		return http.StatusConflict
	case app.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case app.EFORBIDDEN:
		return http.StatusForbidden
	case app.ERATELIMIT:
		return http.StatusTooManyRequests
	case app.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type ctxKey int

const (
	tenantKey ctxKey = iota
	routeKey
)

// tenantOf returns the tenant withTenant resolved.
func tenantOf(r *http.Request) *app.Tenant { return r.Context().Value(tenantKey).(*app.Tenant) }

// withTenant resolves the tenant from the Host header. Until the registry has been read once, every
// host gets a 503: no host is known to be unknown yet. After that, unknown hosts get a 404 without any
// database work; suspended tenants, ones still being set up, and ones whose schema is older than this
// build needs get a 503.
func (s *Server) withTenant(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.cfg.Registry.Loaded():
		default:
			s.fail(w, r, app.Errorf(app.EUNAVAILABLE, "The service is starting and cannot reach its tenant directory yet. Try again in a few seconds."))
			return
		}
		t := s.cfg.Registry.Lookup(r.Host)
		if t == nil && s.cfg.DevHostSuffix != "" {
			if name, ok := strings.CutSuffix(postgres.NormalizeHost(r.Host), s.cfg.DevHostSuffix); ok {
				t = s.cfg.Registry.LookupName(name)
			}
		}
		if info, ok := r.Context().Value(routeKey).(*requestInfo); ok {
			info.tenant = t
		}
		var unavailable string
		switch {
		case t == nil:
			s.fail(w, r, app.Errorf(app.ENOTFOUND, "There is no tenant at %s.", postgres.NormalizeHost(r.Host)))
			return
		case t.State == app.StateSuspended:
			unavailable = t.DisplayName + " is suspended. Please contact your administrator."
		case t.State != app.StateActive:
			unavailable = t.DisplayName + " is being set up. Try again in a moment."
		case t.SchemaVersion < s.cfg.SchemaVersion:
			unavailable = t.DisplayName + " is upgrading. Try again in a minute."
		}
		if unavailable != "" {
			w.Header().Set("Retry-After", "30")
			s.fail(w, r.WithContext(context.WithValue(r.Context(), tenantKey, t)), app.Errorf(app.EUNAVAILABLE, "%s", unavailable))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tenantKey, t)))
	})
}

// fail answers an error in the form the request asked for: JSON for the API, a page otherwise.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := app.ErrorCode(err)
	if code == app.EINTERNAL {
		s.cfg.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	if isAPI(r) {
		writeAPIError(w, err)
		return
	}
	s.renderError(w, r, err)
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

func writeAPIError(w http.ResponseWriter, err error) {
	code := app.ErrorCode(err)
	setRetryAfter(w, statusOf(code))
	writeJSON(w, statusOf(code), map[string]any{"error": map[string]string{"code": code, "message": app.ErrorMessage(err)}})
}

// setRetryAfter tells a client when to come back from a 503, unless the handler already said: every
// 503 here is temporary (an outage, an upgrade, a start-up), and a client, CDN or monitor that reads it
// as "try again" rather than "gone" is what keeps a tenant's users.
func setRetryAfter(w http.ResponseWriter, status int) {
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "5")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.cfg.Registry.Loaded():
	default:
		http.Error(w, "registry not loaded yet", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.DB.Ping(ctx); err != nil {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}
