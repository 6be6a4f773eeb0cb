// Command dev runs the whole of Tenantry on one machine (`make dev`): a real API server (envtest's etcd
// and kube-apiserver), a private PostgreSQL cluster under .dev/, the operator and the app, with the
// samples of config/samples applied. State stays in .dev/ between runs; `make dev-clean` removes it.
//
// Environment: DEV_HTTP_ADDR (default 127.0.0.1:8080), DATABASE_URL (use this database instead of a
// private cluster), DEV_DIR (default .dev), KUBEBUILDER_ASSETS (envtest binaries; fetched if unset).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

const (
	namespace = "default"
	appName   = "expenses" // the ExpenseApp of config/samples
	database  = "tenantry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "\nmake dev: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run() error {
	if _, err := os.Stat(filepath.Join("config", "crd", "bases")); err != nil {
		return errors.New("run it from the repository root (make dev)")
	}
	dir := envOr("DEV_DIR", ".dev")
	httpAddr := envOr("DEV_HTTP_ADDR", "127.0.0.1:8080")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dir, _ = filepath.Abs(dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Check the app's port first: a port in use is the commonest failure and costs nothing to find.
	listener, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("%s is in use (%v): stop what holds it, or choose another address, e.g. DEV_HTTP_ADDR=127.0.0.1:8081 make dev", httpAddr, err)
	}
	httpAddr = listener.Addr().String()
	listener.Close()
	_, port, _ := net.SplitHostPort(httpAddr)

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		step("Getting envtest binaries (built once from the Go module proxy where they cannot be downloaded: about 5 minutes)")
		cmd := exec.Command(filepath.Join("hack", "envtest-assets.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("getting envtest binaries: %w", err)
		}
		assets = strings.TrimSpace(string(out))
	}

	adminURL := os.Getenv("DATABASE_URL")
	if adminURL == "" {
		step("Starting PostgreSQL in %s", filepath.Join(dir, "postgres"))
		pgPort, err := stablePort(dir)
		if err != nil {
			return err
		}
		cluster, err := pgcluster.New(filepath.Join(dir, "postgres"), pgcluster.Options{Durable: true, Port: pgPort})
		if err != nil {
			return err
		}
		if cluster.Running() {
			return fmt.Errorf("PostgreSQL in %s is already running: is another `make dev` still up? Stop it, or run `make dev-clean` to start afresh", cluster.Dir)
		}
		if err := cluster.Start(); err != nil {
			return fmt.Errorf("%w\nIf %s is left over from an older setup, `make dev-clean` removes it", err, dir)
		}
		defer func() { step("Stopping PostgreSQL"); _ = cluster.Stop() }()
		if adminURL, err = ensureDatabase(ctx, cluster); err != nil {
			return err
		}
	} else {
		step("Using the database of DATABASE_URL")
	}

	step("Starting the API server (etcd + kube-apiserver, state in %s)", filepath.Join(dir, "etcd"))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	if err := os.MkdirAll(env.ControlPlane.Etcd.DataDir, 0o700); err != nil {
		return err
	}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer func() { step("Stopping the API server"); _ = env.Stop() }()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}
	k8s, err := client.New(cfg, client.Options{Scheme: controller.NewScheme()})
	if err != nil {
		return err
	}

	// The operator runs as the ServiceAccount config/default gives it, with exactly its RBAC: what works
	// here works in a cluster.
	install, err := manifests.Kustomize(filepath.Join("config", "default"))
	if err != nil {
		return err
	}
	id, err := manifests.ApplyIdentity(ctx, k8s, install)
	if err != nil {
		return fmt.Errorf("applying the operator's RBAC: %w", err)
	}
	step("Starting the operator as %s (log: %s)", id.UserName(), filepath.Join(dir, "operator.log"))
	stopOperator, err := startOperator(ctx, id.Impersonate(cfg), id.Namespace, filepath.Join(dir, "operator.log"))
	if err != nil {
		return err
	}
	defer func() { step("Stopping the operator"); stopOperator() }()

	step("Applying config/samples")
	if err := applySamples(ctx, k8s, id.Namespace, adminURL); err != nil {
		return err
	}
	step("Building the app (cmd/app)")
	binary := filepath.Join(dir, "bin", "app")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/app").CombinedOutput(); err != nil {
		return fmt.Errorf("building cmd/app: %w\n%s", err, out)
	}
	step("Running the app's Deployment on http://%s (log: %s)", httpAddr, filepath.Join(dir, "app.log"))
	started := make(chan string, 1)
	pod := &localPod{k8s: k8s, key: client.ObjectKey{Namespace: namespace, Name: appName}, binary: binary,
		httpAddr: httpAddr, logPath: filepath.Join(dir, "app.log"), started: started,
		confirmed: func(s *corev1.Secret) bool { return sameServer(string(s.Data["uri"]), adminURL) }}
	podCtx, stopPod := context.WithCancel(ctx)
	podDone := make(chan struct{})
	go func() { defer close(podDone); pod.run(podCtx) }()
	defer func() { step("Stopping the app"); stopPod(); <-podDone }()
	select {
	case <-started:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("the app did not become ready within 2 minutes; see %s and %s",
			filepath.Join(dir, "app.log"), filepath.Join(dir, "operator.log"))
	}

	step("Waiting for the tenants to be Ready")
	tenants, err := waitReady(ctx, k8s, time.Minute)
	if err != nil {
		return err
	}
	printSummary(ctx, k8s, tenants, port, kubeconfig)
	<-ctx.Done()
	fmt.Println()
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ensureDatabase creates the development database once and returns the superuser's URL for it.
func ensureDatabase(ctx context.Context, c *pgcluster.Cluster) (string, error) {
	if err := c.WaitReady(ctx); err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", database).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+database); err != nil {
			return "", fmt.Errorf("creating database %s: %w", database, err)
		}
	}
	return c.URL(database), nil
}

// startOperator runs the operator in this process as cfg says (its ServiceAccount), taking the
// ClusterDatabases' Secrets from namespace platform, and logging to logPath; the function it returns stops it.
func startOperator(ctx context.Context, cfg *ctrlConfig, platform, logPath string) (func(), error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile)))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: controller.NewScheme(), Cache: controller.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	dbs, err := controller.Setup(mgr, controller.Config{MaxConcurrentReconciles: 4, PlatformNamespace: platform,
		// Usage and drift show up within seconds and follow what a developer does in the app and psql.
		UsageInterval: time.Minute, DriftInterval: time.Minute, FirstCheckDelay: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "make dev: the operator stopped: %v\n", err)
		}
		dbs.Close()
		_ = logFile.Close() // the operator has stopped writing to it
	}, nil
}

// stablePort is the port of the development PostgreSQL: the one recorded in .dev/postgres-port by an
// earlier run, else a free one, recorded now. A stable port keeps every connection string the stack
// has handed out (Secrets, a running app, a developer's psql) valid across runs.
func stablePort(dir string) (int, error) {
	file := filepath.Join(dir, "postgres-port")
	if b, err := os.ReadFile(file); err == nil {
		port, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, fmt.Errorf("%s does not hold a port number: delete it to pick a new port", file)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return 0, fmt.Errorf("port %d, which this stack's PostgreSQL uses (recorded in %s), is taken by another "+
				"program: stop that program, or delete %s to move PostgreSQL to a new port", port, file, file)
		}
		l.Close()
		return port, nil
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return 0, err
	}
	return port, os.WriteFile(file, []byte(strconv.Itoa(port)+"\n"), 0o644)
}

// sameServer reports whether two connection strings reach the same host, port and database.
func sameServer(a, b string) bool {
	ca, errA := pgx.ParseConfig(a)
	cb, errB := pgx.ParseConfig(b)
	return errA == nil && errB == nil && ca.Host == cb.Host && ca.Port == cb.Port && ca.Database == cb.Database
}

// applySamples writes the database's admin Secret into the operator's namespace (platform), as the
// platform team does, and applies config/samples: the ClusterDatabase, and the rest into the default
// namespace.
func applySamples(ctx context.Context, k8s client.Client, platform, adminURL string) error {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "expenses-db", Namespace: platform}}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), secret); apierrors.IsNotFound(err) {
		secret.StringData = map[string]string{"uri": adminURL}
		if err := k8s.Create(ctx, secret); err != nil {
			return fmt.Errorf("creating Secret expenses-db: %w", err)
		}
	} else if err != nil {
		return err
	} else {
		secret.StringData = map[string]string{"uri": adminURL} // the port may have changed since last time
		if err := k8s.Update(ctx, secret); err != nil {
			return fmt.Errorf("updating Secret expenses-db: %w", err)
		}
	}
	files, _ := filepath.Glob(filepath.Join("config", "samples", "*.yaml"))
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		o, err := decodeYAML(b)
		if err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		objs = append(objs, o...)
	}
	for _, o := range objs {
		if o.GetKind() != "ClusterDatabase" {
			o.SetNamespace(namespace)
		}
		if o.GetKind() == "ExpenseApp" {
			// One process on this machine plays the app's Deployment: one replica.
			if err := unstructured.SetNestedField(o.Object, int64(1), "spec", "replicas"); err != nil {
				return err
			}
		}
		if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("tenantry-dev"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// waitReady waits until every Tenant of the namespace is Ready and returns them by name.
func waitReady(ctx context.Context, k8s client.Client, timeout time.Duration) ([]tenantryv1.Tenant, error) {
	deadline := time.Now().Add(timeout)
	for {
		var list tenantryv1.TenantList
		if err := k8s.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return nil, err
		}
		var waiting []string
		for _, t := range list.Items {
			if c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
				msg := "not reconciled yet"
				if c != nil {
					msg = c.Message
				}
				waiting = append(waiting, t.Name+": "+msg)
			}
		}
		if len(waiting) == 0 {
			sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
			return list.Items, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tenants not Ready after %s:\n  %s\nSee .dev/operator.log", timeout, strings.Join(waiting, "\n  "))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printSummary(ctx context.Context, k8s client.Client, tenants []tenantryv1.Tenant, port, kubeconfig string) {
	fmt.Printf("\nTenantry is running. Tenants (sign in with the admin login):\n\n")
	for _, t := range tenants {
		var s corev1.Secret
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Status.AdminSecretName}, &s)
		u := fmt.Sprintf("http://%s.localhost:%s/", t.Name, port)
		fmt.Printf("  %-10s %-36s %s / %s\n", t.Name, u, s.Data["email"], s.Data["password"])
	}
	rel := kubeconfig
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, kubeconfig); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
	}
	fmt.Printf(`
Try:
  kubectl --kubeconfig %s get tenants
  kubectl --kubeconfig %s apply -f my-tenant.yaml     # served at http://<name>.localhost:%s/ within a second

Press Ctrl-C to stop. State is kept in .dev/ for the next run; make dev-clean removes it.
`, rel, rel, port)
}
