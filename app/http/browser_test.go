package http_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/migrations"
)

// chromium finds the browser; without one the browser tests are skipped on a developer's machine and
// fail in CI, where .ci/run installs it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium found: install it (apt-get install chromium)")
	}
	t.Skip("no Chromium found (apt-get install chromium); skipping the browser test")
	return ""
}

// A person's afternoon in real headless Chromium: sign in, set up a department, an account and a
// budget, record an expense above the approval threshold, approve it from the dashboard, see the chart.
// The dashboard's screenshot is kept in artifacts/.
func TestBrowser_expenseWorkflow(t *testing.T) {
	exe := chromium(t)
	h := newHarness(t, options{})
	ctx := context.Background()
	threshold := int64(50000)
	shop, err := h.env.Provision(ctx, apptestTenantWith("shop", "shop.localhost", "EUR", &threshold))
	must(t, err)
	h.sync()
	// A real listener on 127.0.0.1: Chromium resolves *.localhost to loopback by itself.
	srv := httptest.NewServer(apphttp.New(apphttp.Config{DB: h.db, Registry: h.reg, SchemaVersion: migrations.Latest, Log: discardLog()}))
	defer srv.Close()
	base := strings.Replace(srv.URL, "127.0.0.1", "shop.localhost", 1)

	alloc, cancel := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))
	defer cancel()
	bctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	// The browser starts with the first action; a deadline on this context would stop it too.
	go func() {
		select {
		case <-time.After(90 * time.Second):
			cancel()
		case <-bctx.Done():
		}
	}()

	must(t, chromedp.Do(bctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(`input[name=email]`),
		chromedp.SendKeys(`input[name=email]`, shop.AdminEmail),
		chromedp.SendKeys(`input[name=password]`, shop.AdminPassword),
		chromedp.Submit(`input[name=password]`),
		chromedp.WaitVisible(`#pending`),
	))
	if title, err := chromedp.Run(bctx, chromedp.Text(`h1`)); err != nil || title != "Dashboard" {
		t.Fatalf("after sign-in the page is %q (%v)", title, err)
	}
	steps := []struct {
		path   string
		fields map[string]string
		expect string
	}{
		{"/departments", map[string]string{"name": "Research"}, "Research"},
		{"/accounts", map[string]string{"name": "Horizon grant", "total": "10000"}, "10,000.00 EUR"},
		{"/budgets", map[string]string{"amount": "6000"}, "6,000.00 EUR"},
		{"/expenses/new", map[string]string{"description": "Laptop for the lab", "amount": "750.00"}, "Laptop for the lab"},
	}
	var text string
	for _, s := range steps {
		actions := []chromedp.Action[chromedp.Void]{chromedp.Navigate(base + s.path), chromedp.WaitVisible(`form.card button[type=submit]`)}
		for name, value := range s.fields {
			actions = append(actions, chromedp.SendKeys(`form.card [name=`+name+`]`, value))
		}
		actions = append(actions, chromedp.Click(`form.card button[type=submit]`))
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", s.path, err)
		}
		if text, err = waitText(bctx, "main", s.expect); err != nil {
			t.Fatalf("after posting %s: %v", s.path, err)
		}
	}
	if !strings.Contains(text, "pending") {
		t.Fatalf("a 750.00 EUR expense above the 500.00 EUR threshold is not pending:\n%s", text)
	}

	// The dashboard lists it for approval; approve it.
	must(t, chromedp.Do(bctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(`#pending`)))
	pending, err := chromedp.Run(bctx, chromedp.Text(`#pending`))
	must(t, err)
	if !strings.Contains(pending, "Laptop for the lab") || !strings.Contains(pending, "(1)") {
		t.Fatalf("pending approvals: %q", pending)
	}
	must(t, chromedp.Do(bctx, chromedp.Click(`#pending button[name=approve]`)))
	if _, err := waitText(bctx, "#pending", "Nothing is waiting"); err != nil {
		t.Fatalf("after approving: %v", err)
	}
	chart, err := chromedp.Run(bctx, chromedp.OuterHTML(`#budget-chart`))
	must(t, err)
	if !strings.Contains(chart, "Research: 750.00 EUR spent, 0.00 EUR pending of 6,000.00 EUR") {
		t.Fatalf("the budget chart does not show the approved expense:\n%s", chart)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	must(t, err)
	dir := filepath.Join("..", "..", "artifacts")
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "dashboard.png"), shot, 0o644))
	t.Logf("dashboard screenshot: %s (%d bytes)", filepath.Join(dir, "dashboard.png"), len(shot))
}

// waitText waits until the element's text contains want, and returns the text.
func waitText(ctx context.Context, sel, want string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		text, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err == nil && strings.Contains(text, want) {
			return text, nil
		}
		if time.Now().After(deadline) {
			return text, fmt.Errorf("%s never showed %q (last: %v)\n%s", sel, want, err, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
