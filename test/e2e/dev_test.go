// Package e2e drives `make dev` the way a newcomer does: start the stack, apply a Tenant with kubectl,
// sign in with the password from its Secret, record an expense, delete the Tenant, see the host go;
// then stop it with Ctrl-C, start it again on the same .dev/ and sign in to a sample tenant.
package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDevStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kubectl not found: install it (apt-get install kubectl)")
		}
		t.Skip("kubectl not found; skipping the end-to-end test")
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	bin := filepath.Join(t.TempDir(), "dev")
	build := exec.Command("go", "build", "-o", bin, "./hack/dev")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building hack/dev: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "dev-state")
	addr := freeAddr(t)
	dev := startDev(t, bin, root, dir, addr)
	waitLine(t, dev.output, "Tenantry is running", 5*time.Minute)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	k := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	k(`apiVersion: tenantry.dev/v1alpha1
kind: Tenant
metadata: {name: e2e, namespace: default}
spec:
  appRef: {name: expenses}
  displayName: End To End Inc
  hosts: [e2e.example.test]
  settings: {currency: EUR, approvalThreshold: 100000}
  admin: {email: boss@e2e.example.test}
`, "apply", "-f", "-")
	k("", "wait", "--for=condition=Ready", "tenant/e2e", "--timeout=30s")
	pw := decode(t, k("", "get", "secret", "e2e-admin", "-o", "jsonpath={.data.password}"))

	base := "http://" + addr
	host := "e2e.localhost"
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(method, path, body, cookie string) (int, string, *http.Response) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Host = host
		switch {
		case strings.HasPrefix(body, "{"):
			req.Header.Set("Content-Type", "application/json")
		case body != "":
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != "" {
			req.Header.Set("Cookie", "tenantry_session="+cookie)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res
	}
	status, _, res := call("POST", "/login", url.Values{"email": {"boss@e2e.example.test"}, "password": {pw}}.Encode(), "")
	if status != http.StatusSeeOther {
		t.Fatalf("sign-in with the Secret's password: %d", status)
	}
	var session string
	for _, c := range res.Cookies() {
		if c.Name == "tenantry_session" {
			session = c.Value
		}
	}
	for _, step := range []struct{ path, body string }{
		{"/api/v1/departments", `{"name":"Sales"}`},
		{"/api/v1/accounts", `{"name":"Budget 2026","totalMinor":1000000}`},
		{"/api/v1/budgets", fmt.Sprintf(`{"departmentId":1,"accountId":1,"month":%q,"amountMinor":500000}`, time.Now().Format("2006-01"))},
		{"/api/v1/expenses", fmt.Sprintf(`{"budgetId":1,"spentOn":%q,"description":"Client dinner","amountMinor":8900}`, time.Now().Format("2006-01-02"))},
	} {
		if status, body, _ := call("POST", step.path, step.body, session); status != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", step.path, status, body)
		}
	}
	if status, body, _ := call("GET", "/api/v1/expenses", "", session); status != http.StatusOK || !strings.Contains(body, "Client dinner") {
		t.Fatalf("expense list: %d %s", status, body)
	}

	k("", "delete", "tenant", "e2e", "--timeout=30s")
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, _ := call("GET", "/login", "", "")
		if status == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host still served %s after the Tenant was deleted: %d", host, status)
		}
		time.Sleep(50 * time.Millisecond)
	}

	dev.interrupt()
	if _, err := os.Stat(filepath.Join(dir, "postgres", "data", "postmaster.pid")); err == nil {
		t.Fatal("PostgreSQL still running after make dev stopped")
	}
	port, err := os.ReadFile(filepath.Join(dir, "postgres-port"))
	if err != nil {
		t.Fatalf("the first run recorded no PostgreSQL port: %v", err)
	}

	// The second run reuses .dev/: the same PostgreSQL port, and a sample tenant signs in.
	dev = startDev(t, bin, root, dir, addr)
	waitLine(t, dev.output, "Tenantry is running", 3*time.Minute)
	if again, _ := os.ReadFile(filepath.Join(dir, "postgres-port")); string(again) != string(port) {
		t.Errorf("PostgreSQL moved from port %s to %s between runs", port, again)
	}
	if uri := k("", "get", "secret", "expenses-app-db", "-o", "jsonpath={.data.uri}"); !strings.Contains(decode(t, uri), ":"+strings.TrimSpace(string(port))+"/") {
		t.Errorf("the app's Secret does not name this run's port %s: %s", port, decode(t, uri))
	}
	host = "acme.localhost"
	acmePassword := decode(t, k("", "get", "secret", "acme-admin", "-o", "jsonpath={.data.password}"))
	status, body, _ := call("POST", "/login", url.Values{"email": {"finance@acme.com"}, "password": {acmePassword}}.Encode(), "")
	if status != http.StatusSeeOther {
		t.Fatalf("second run: sign-in to acme: %d %s", status, body)
	}
	// What kubectl shows is true: the app runs, and says by whom (once the operator has seen the
	// Deployment's status that make dev reports).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := k("", "get", "expenseapp", "expenses", "-o", "jsonpath={.status.conditions[?(@.type==\"Deployed\")].message}")
		if strings.Contains(out, "make dev") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ExpenseApp Deployed condition does not say the app runs inside make dev: %q", out)
		}
	}
	k("", "wait", "--for=condition=Ready", "expenseapp/expenses", "--timeout=30s")
	dev.interrupt()
}

// devProcess is one run of make dev.
type devProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	output chan string
	exited chan error
}

func startDev(t *testing.T, bin, root, dir, addr string) *devProcess {
	t.Helper()
	d := &devProcess{t: t, cmd: exec.Command(bin), output: make(chan string, 100), exited: make(chan error, 1)}
	d.cmd.Dir = root
	d.cmd.Env = append(os.Environ(), "DEV_DIR="+dir, "DEV_HTTP_ADDR="+addr)
	stdout, _ := d.cmd.StdoutPipe()
	d.cmd.Stderr = os.Stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log("make dev: " + sc.Text())
			d.output <- sc.Text()
		}
		close(d.output)
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() { _ = d.cmd.Process.Signal(syscall.SIGKILL) })
	return d
}

// interrupt is Ctrl-C: everything stops cleanly, within 30 s.
func (d *devProcess) interrupt() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(os.Interrupt)
	for range d.output {
	}
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Fatalf("make dev exited with %v after Ctrl-C", err)
		}
	case <-time.After(30 * time.Second):
		d.t.Fatal("make dev did not stop within 30s of Ctrl-C")
	}
}

func decode(t *testing.T, b64 string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func waitLine(t *testing.T, lines <-chan string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("make dev ended before printing %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("make dev did not print %q within %s", want, timeout)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
