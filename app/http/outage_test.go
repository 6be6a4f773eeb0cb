package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app/apptest"
	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// Before the registry has been read once, no host is known to be unknown: every host gets 503 with
// Retry-After, never 404, the API included.
func TestServer_registryNotLoadedIs503(t *testing.T) {
	db, err := postgres.Open("postgres://nobody@127.0.0.1:1/none", postgres.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv := httptest.NewServer(apphttp.New(apphttp.Config{DB: db, Registry: postgres.NewRegistry(),
		SchemaVersion: migrations.Latest, Log: discardLog()}))
	defer srv.Close()
	for _, path := range []string{"/", "/login", "/api/v1/me"} {
		for _, host := range []string{"acme.test", "never-heard-of.test"} {
			req, _ := http.NewRequest("GET", srv.URL+path, nil)
			req.Host = host
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
				t.Errorf("%s%s before the registry loaded: %d, Retry-After %q; want 503 with Retry-After",
					host, path, res.StatusCode, res.Header.Get("Retry-After"))
			}
		}
	}
}

// PostgreSQL stops under load and comes back. Meanwhile a known tenant gets 503 with Retry-After and
// never 404; an unknown host still gets 404; once PostgreSQL is back everything serves again within
// seconds, nothing written before the outage is lost, and the registry follows changes again.
func TestServer_databaseOutage(t *testing.T) {
	own, err := pgcluster.StartThrowaway()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	if own.External() {
		t.Skip("stops its server: needs a throwaway cluster, not TENANTRY_TEST_DATABASE_URL")
	}
	h := newHarness(t, options{cluster: own, listen: true})
	sa := h.loginA()
	var tok struct{ Token string }
	must(t, json.Unmarshal([]byte(h.api(http.StatusCreated, req{method: "POST", host: "acme.test",
		path: "/api/v1/tokens", session: sa, json: `{"name":"outage"}`})), &tok))
	const written = 20
	for i := range written {
		h.api(http.StatusCreated, req{method: "POST", host: "acme.test", path: "/api/v1/departments",
			token: tok.Token, json: fmt.Sprintf(`{"name":"Dept %d"}`, i)})
	}

	// Load: a known tenant's API and pages, and a host no tenant has.
	type sample struct {
		host       string
		status     int
		retryAfter bool
		at         time.Time
	}
	var (
		mu      sync.Mutex
		samples []sample
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	hit := func(host, path string) {
		defer wg.Done()
		for !stop.Load() {
			r, _ := http.NewRequest("GET", h.srv.URL+path, nil)
			r.Host = host
			r.Header.Set("Authorization", "Bearer "+tok.Token)
			res, err := client.Do(r)
			if err != nil {
				t.Errorf("GET %s%s: %v", host, path, err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			samples = append(samples, sample{host, res.StatusCode, res.Header.Get("Retry-After") != "", time.Now()})
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Add(3)
	go hit("acme.test", "/api/v1/departments")
	go hit("acme.test", "/login")
	go hit("unknown.test", "/api/v1/departments")
	count := func(host string, status int, since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range samples {
			if s.host == host && s.status == status && !s.at.Before(since) {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > timeout {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("%s: not within %s", what, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("serving before the outage", 10*time.Second, func() bool { return count("acme.test", http.StatusOK, time.Time{}) > 5 })

	if err := own.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitFor("503 for the known tenant during the outage", 10*time.Second, func() bool {
		return count("acme.test", http.StatusServiceUnavailable, down) > 20
	})
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	back := waitFor("serving again after PostgreSQL's return", 30*time.Second, func() bool {
		return count("acme.test", http.StatusOK, up) > 5
	})
	stop.Store(true)
	wg.Wait()
	t.Logf("serving again %s after PostgreSQL started", back.Round(time.Millisecond))

	mu.Lock()
	for _, s := range samples {
		switch {
		case s.host == "acme.test" && s.status == http.StatusNotFound:
			t.Errorf("the known tenant got 404 at %s (outage from %s)", s.at.Format(time.StampMilli), down.Format(time.StampMilli))
		case s.host == "acme.test" && s.status == http.StatusServiceUnavailable && !s.retryAfter:
			t.Errorf("a 503 without Retry-After at %s", s.at.Format(time.StampMilli))
		case s.host == "acme.test" && s.status != http.StatusOK && s.status != http.StatusServiceUnavailable:
			t.Errorf("the known tenant got %d at %s, want 200 or 503", s.status, s.at.Format(time.StampMilli))
		case s.host == "unknown.test" && s.status != http.StatusNotFound:
			t.Errorf("the unknown host got %d at %s, want 404 throughout", s.status, s.at.Format(time.StampMilli))
		}
	}
	mu.Unlock()

	var list struct{ Items []json.RawMessage }
	must(t, json.Unmarshal([]byte(h.api(http.StatusOK, req{host: "acme.test", path: "/api/v1/departments", token: tok.Token})), &list))
	if len(list.Items) != written {
		t.Errorf("after the outage: %d departments, want the %d written before it", len(list.Items), written)
	}
	// The listener is back too: a tenant added now is served without a restart. (The operator side's
	// pool may first hand out a connection the restart ended; the operator retries, and so does this.)
	waitFor("provisioning after the outage", 10*time.Second, func() bool {
		_, err := h.env.Provision(context.Background(), apptest.Tenant{Name: "initech", Hosts: []string{"initech.test"}})
		return err == nil
	})
	waitFor("a tenant added after the outage is served", 10*time.Second, func() bool {
		return h.do(req{host: "initech.test", path: "/login"}).status == http.StatusOK
	})
}

// A request that finds its tenant's schema gone from where the app looked (the tenant moved to another
// shard a moment ago and the source's copy was renamed before the app heard of it) is answered 503 with
// Retry-After, as a move's fence is: nothing was written, and the next request goes to the new shard.
func TestServer_schemaMovedAwayIs503(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	sa := h.loginA()
	admin, err := pgx.Connect(ctx, h.env.AdminURL)
	must(t, err)
	defer admin.Close(ctx)
	schema := pgx.Identifier{h.a.Schema}.Sanitize()
	moved := pgx.Identifier{h.a.Schema + "_moved"}.Sanitize()
	_, err = admin.Exec(ctx, "ALTER SCHEMA "+schema+" RENAME TO "+moved)
	must(t, err)
	r := h.do(req{method: "GET", host: "acme.test", path: "/api/v1/departments", session: sa})
	_, err = admin.Exec(ctx, "ALTER SCHEMA "+moved+" RENAME TO "+schema)
	must(t, err)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("a request for a schema moved away: %d (Retry-After %q), want 503 with Retry-After\n%s",
			r.status, r.header.Get("Retry-After"), r.body)
	}
	if r := h.do(req{method: "GET", host: "acme.test", path: "/api/v1/departments", session: sa}); r.status != http.StatusOK {
		t.Fatalf("once the schema is back: %d", r.status)
	}
}
