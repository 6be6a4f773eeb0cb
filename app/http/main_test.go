package http_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/apptest"
	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

var cluster *pgcluster.Throwaway

func TestMain(m *testing.M) { pgcluster.RunTests(m, &cluster) }

// harness is the app serving two tenants, A and B, from one database, as its own login role.
type harness struct {
	t      *testing.T
	env    *apptest.Env
	db     *postgres.DB
	reg    *postgres.Registry
	srv    *httptest.Server
	app    *apphttp.Server
	a, b   *apptest.Provisioned
	client *http.Client
}

type options struct {
	bouncer bool                 // connect through PgBouncer in transaction mode
	secure  bool                 // Secure cookies
	cluster *pgcluster.Throwaway // the server to use, when not the package's shared one
	listen  bool                 // keep the registry current with Registry.Run, as the app does
	pool    postgres.Options     // the app's pool (default 8 connections in 2 shards)
	proxies []netip.Prefix       // trusted proxies
	tenants int                  // per-tenant metrics for up to this many tenants (Config.TenantMetrics)
	// maxHashes and maxExports are Config.MaxHashes and Config.MaxExports.
	maxHashes, maxExports int
}

func newHarness(t *testing.T, opts options) *harness {
	t.Helper()
	ctx := context.Background()
	if opts.cluster == nil {
		opts.cluster = cluster
	}
	env, err := apptest.NewEnv(ctx, opts.cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	h := &harness{t: t, env: env}
	threshold := int64(50000)
	if h.a, err = env.Provision(ctx, apptest.Tenant{Name: "acme", Hosts: []string{"acme.test", "expenses.acme.test"},
		Currency: "EUR", Threshold: &threshold, PrimaryColor: "#0b5fff"}); err != nil {
		t.Fatal(err)
	}
	if h.b, err = env.Provision(ctx, apptest.Tenant{Name: "globex", Hosts: []string{"globex.test"}, Currency: "JPY"}); err != nil {
		t.Fatal(err)
	}
	appURL := env.AppURL
	if opts.bouncer {
		if opts.cluster.External() {
			t.Skip("PgBouncer tests need the throwaway cluster")
		}
		b, err := pgcluster.StartBouncer(opts.cluster.Port, []string{env.AppRole}, 2)
		if err != nil && os.Getenv("CI") == "" && strings.Contains(err.Error(), "not found") {
			t.Skip(err) // a developer's machine without PgBouncer; CI installs it
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
		u, _ := url.Parse(appURL)
		u.Host = fmt.Sprintf("127.0.0.1:%d", b.Port)
		appURL = u.String()
	}
	if opts.pool.MaxConns == 0 {
		opts.pool = postgres.Options{MaxConns: 8, PoolShards: 2}
	}
	if h.db, err = postgres.Open(appURL, opts.pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.db.Close)
	h.reg = postgres.NewRegistry()
	if opts.listen {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = h.reg.Run(ctx, env.Channel, func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.AppURL) }, discardLog())
		}()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case <-h.reg.Loaded():
		case <-time.After(10 * time.Second):
			t.Fatal("the registry did not load within 10 s")
		}
	} else {
		h.sync()
	}
	srv := apphttp.New(apphttp.Config{DB: h.db, Registry: h.reg, SchemaVersion: migrations.Latest, SecureCookies: opts.secure,
		Log: discardLog(), TrustedProxies: opts.proxies, TenantMetrics: opts.tenants, MaxHashes: opts.maxHashes, MaxExports: opts.maxExports})
	h.app = srv
	h.srv = httptest.NewServer(srv)
	t.Cleanup(h.srv.Close)
	h.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return h
}

// sync reloads the registry from the database.
func (h *harness) sync() {
	h.t.Helper()
	pool, err := postgres.Open(h.env.AppURL, postgres.Options{MaxConns: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	defer pool.Close()
	if err := h.reg.Sync(context.Background(), pool.Pool()); err != nil {
		h.t.Fatal(err)
	}
}

// req is one request to the app.
type req struct {
	method, host, path string
	form               url.Values
	json               string
	session, token     string
	header             map[string]string
}

type resp struct {
	status int
	body   string
	header http.Header
}

func (h *harness) do(r req) resp {
	h.t.Helper()
	var body io.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	} else if r.json != "" {
		body = strings.NewReader(r.json)
	}
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr, err := http.NewRequest(r.method, h.srv.URL+r.path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	hr.Host = r.host
	if r.form != nil {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.json != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.session != "" {
		hr.AddCookie(&http.Cookie{Name: "tenantry_session", Value: r.session})
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := h.client.Do(hr)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, body: string(b), header: res.Header}
}

// login signs in and returns the session cookie's value.
func (h *harness) login(host, email, password string) string {
	h.t.Helper()
	r := h.do(req{method: "POST", host: host, path: "/login", form: url.Values{"email": {email}, "password": {password}}})
	if r.status != http.StatusSeeOther {
		h.t.Fatalf("login %s on %s: status %d\n%s", email, host, r.status, r.body)
	}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if strings.HasSuffix(c.Name, "tenantry_session") && c.Value != "" {
			return c.Value
		}
	}
	h.t.Fatalf("login on %s set no session cookie: %v", host, r.header)
	return ""
}

func (h *harness) loginA() string { return h.login("acme.test", h.a.AdminEmail, h.a.AdminPassword) }
func (h *harness) loginB() string { return h.login("globex.test", h.b.AdminEmail, h.b.AdminPassword) }

// api calls the JSON API and fails the test unless the status is want.
func (h *harness) api(want int, r req) string {
	h.t.Helper()
	res := h.do(r)
	if res.status != want {
		h.t.Fatalf("%s %s on %s: status %d, want %d\n%s", r.method, r.path, r.host, res.status, want, res.body)
	}
	return res.body
}

func month(t time.Time) string { return app.FirstOfMonth(t).Format("2006-01") }
