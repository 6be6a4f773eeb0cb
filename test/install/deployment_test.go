package install_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/test/utils/kubelet"
	"tenantry.dev/tenantry/test/utils/manifests"
)

// The app's Deployment, as the operator (installed by the chart) writes it, runs: its container, run
// exactly as written (command, args, env with the Secret references read; as nobody, since the pod must
// not run as root), passes its readiness and liveness probes, serves the tenant at its host and its
// metrics on the port the Service names, and stops cleanly on SIGTERM. No kubelet runs here, so
// test/utils/kubelet plays it.
func TestDeployment_runsAsWritten(t *testing.T) {
	ctx := context.Background()
	ns := "app-run"
	ensureNamespaces(t, releaseNamespace, ns)
	objs := render(t, nil)
	installCRDs(t, objs)
	startOperator(t, objs)
	dbURL, err := pg.NewDatabase(ctx, "apprun")
	must(t, err)
	must(t, manifests.DeclareDatabase(ctx, k8s, releaseNamespace, "apprun", dbURL, ns))
	onboard(t, ns, "apprun")
	waitReady(t, ns, "acme")
	// The app sits behind an ingress controller, here this machine: spec.trustedProxies says so.
	app := &tenantryv1.ExpenseApp{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app))
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.TrustedProxies = []string{"127.0.0.1"}
	must(t, k8s.Patch(ctx, app, patch))

	dep := &appsv1.Deployment{}
	var c *corev1.Container
	must(t, eventually(30*time.Second, func() error {
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, dep))
		var err error
		if c, err = kubelet.Container(dep, "app"); err != nil {
			return err
		}
		for _, e := range c.Env {
			if e.Name == "TRUSTED_PROXIES" && e.Value == "127.0.0.1" {
				return nil
			}
		}
		return fmt.Errorf("the app's container does not get spec.trustedProxies: %+v", c.Env)
	}))
	if env, _ := kubelet.Env(ctx, k8s, ns, c); !slices.ContainsFunc(env, func(e string) bool {
		return strings.HasPrefix(e, "DEVICE_KEY=") && len(e) > len("DEVICE_KEY=")+40
	}) {
		t.Error("the app's container gets no DEVICE_KEY from the app's Secret: replicas could not share device cookies")
	}
	if automount := dep.Spec.Template.Spec.AutomountServiceAccountToken; automount == nil || *automount {
		t.Error("the app's pods get a ServiceAccount token, though the app never talks to the API server")
	}
	// The pod's ports are the container's own, as written; here they are this machine's.
	for _, p := range c.Ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.ContainerPort))
		if err != nil {
			t.Fatalf("port %d (%s) of the app's container is taken on this machine: %v", p.ContainerPort, p.Name, err)
		}
		l.Close()
	}
	bin := buildApp(t)
	log, err := os.Create(filepath.Join(t.TempDir(), "app.log"))
	must(t, err)
	proc, err := kubelet.Start(ctx, k8s, dep, c, kubelet.Options{Binaries: map[string]string{"/app": bin}, Log: log})
	must(t, err)
	stopped := false
	defer func() {
		if !stopped {
			_ = proc.Stop(time.Second)
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("the app's log:\n%s", b)
		}
	}()

	must(t, eventually(30*time.Second, func() error { return kubelet.Probe(ctx, "127.0.0.1", c, c.ReadinessProbe) }))
	must(t, kubelet.Probe(ctx, "127.0.0.1", c, c.LivenessProbe))
	if os.Geteuid() == 0 {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.Cmd.Process.Pid))
		must(t, err)
		if !strings.Contains(string(status), "\nUid:\t65534\t") {
			t.Errorf("the app runs as root although its pod says runAsNonRoot")
		}
	}

	// The tenant, at its host, through the port the Service sends "http" to.
	httpPort, metricsPort := port(t, c, "http"), port(t, c, "metrics")
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/login", httpPort), nil)
	req.Host = "acme." + ns + ".example.com"
	body := get(t, req)
	if !strings.Contains(body, "Acme in "+ns) {
		t.Errorf("the tenant's sign-in page does not name it:\n%.300s", body)
	}
	// Behind the trusted proxy, sign-in limits count per client: one client's flood of wrong passwords
	// is refused, and another client behind the same proxy still gets its answer.
	signIn := func(client, email string) int {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/login", httpPort),
			strings.NewReader(url.Values{"email": {email}, "password": {"wrong-password"}}.Encode()))
		req.Host = "acme." + ns + ".example.com"
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", client)
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	refused := 0
	for i := range 15 {
		if signIn("203.0.113.7", fmt.Sprintf("guess%d@acme.example.com", i)) == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused == 0 {
		t.Error("15 wrong passwords from one client were all answered: the sign-in limit does not count per client")
	}
	if status := signIn("198.51.100.9", "admin@acme.example.com"); status == http.StatusTooManyRequests {
		t.Error("another client behind the same proxy is refused: the app does not trust spec.trustedProxies")
	}
	req, _ = http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), nil)
	if body := get(t, req); !strings.Contains(body, "tenantry_app_database_up 1") {
		t.Errorf("the app's metrics say its database is not up:\n%.300s", body)
	}

	stopped = true
	if err := proc.Stop(10 * time.Second); err != nil {
		t.Errorf("the app did not stop cleanly on SIGTERM: %v", err)
	}
}

// buildApp builds cmd/app, the image's /app, where a non-root user may run it.
func buildApp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tenantry-app-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/app")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/app: %v\n%s", err, out)
	}
	return bin
}

// port is the container's port of that name.
func port(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("the app's container has no port %q", name)
	return 0
}

// get sends req and returns the body of its 200 response.
func get(t *testing.T, req *http.Request) string {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	must(t, err)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s (Host %s): %s\n%.300s", req.Method, req.URL, req.Host, res.Status, b)
	}
	return string(b)
}
