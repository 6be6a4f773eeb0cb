package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// pluginBuild is kubectl-tenantry, built once for the suite into a directory that PATH then names, so
// kubectl finds it as a user's kubectl does.
var pluginBuild struct {
	once sync.Once
	dir  string
	err  error
}

// pluginDir builds cmd/kubectl-tenantry (once) and returns the directory holding it.
func pluginDir(t *testing.T) string {
	t.Helper()
	pluginBuild.once.Do(func() {
		if pluginBuild.dir, pluginBuild.err = os.MkdirTemp("", "kubectl-tenantry-"); pluginBuild.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(pluginBuild.dir, "kubectl-tenantry"),
			"../../cmd/kubectl-tenantry").CombinedOutput()
		if err != nil {
			pluginBuild.err = fmt.Errorf("building kubectl-tenantry: %v\n%s", err, out)
			return
		}
		// kubectl's completion of plugins runs kubectl_complete-<plugin>, as krew installs it.
		out, err = exec.Command("cp", "../../cmd/kubectl-tenantry/kubectl_complete-tenantry", pluginBuild.dir).CombinedOutput()
		if err != nil {
			pluginBuild.err = fmt.Errorf("copying kubectl_complete-tenantry: %v\n%s", err, out)
		}
	})
	if pluginBuild.err != nil {
		t.Fatal(pluginBuild.err)
	}
	return pluginBuild.dir
}

// removePluginBuild removes the plugin built for the suite.
func removePluginBuild() {
	if pluginBuild.dir != "" {
		_ = os.RemoveAll(pluginBuild.dir)
	}
}

// kubeUser is a kubeconfig for the suite's API server: its admin, or a user the admin impersonates
// (whose rights are then the RBAC the test gives them), in a namespace.
func kubeUser(t *testing.T, cfg *rest.Config, impersonate, namespace string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData,
		Token: cfg.BearerToken, Impersonate: impersonate}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "user", Namespace: namespace}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// pluginRun is one run of kubectl tenantry: its output, standard error and exit code.
type pluginRun struct {
	out, err string
	code     int
}

// kubectlTenantry runs `kubectl tenantry ARGS` as a user would, with the kubeconfig given, and
// returns what it printed and its exit code.
func kubectlTenantry(t *testing.T, kubeconfig string, args ...string) pluginRun {
	t.Helper()
	return kubectl(t, kubeconfig, append([]string{"tenantry"}, args...)...)
}

// kubectl runs kubectl with the plugin on the PATH.
func kubectl(t *testing.T, kubeconfig string, args ...string) pluginRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+pluginDir(t)+string(os.PathListSeparator)+os.Getenv("PATH"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	run := pluginRun{out: out.String(), err: errOut.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		run.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("$ kubectl %s  (exit %d)\n%s%s", strings.Join(args, " "), run.code, run.out, run.err)
	return run
}

// expect fails the test unless the run ended with the exit code given and its output holds each text.
func (r pluginRun) expect(t *testing.T, code int, texts ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.out, r.err)
	}
	for _, s := range texts {
		if !strings.Contains(r.out+r.err, s) {
			t.Errorf("the output lacks %q\nstdout:\n%s\nstderr:\n%s", s, r.out, r.err)
		}
	}
}

// decode reads the run's JSON output.
func (r pluginRun) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.out), v); err != nil {
		t.Fatalf("-o json printed no JSON: %v\n%s", err, r.out)
	}
}

// Every command of kubectl tenantry, run through kubectl as a user runs it, against a fleet of three
// tenants on a sharded app: one Ready on home, one Ready on west with planted code, one stalled on a
// shard that does not exist. The reports (text and -o json) say what status holds; suspend, resume,
// reset-admin and move edit the resources and wait for the operator; psql opens the tenant's schema as
// the app's login, read-only unless --write, and reaches no other tenant. A user with read-only rights
// in the namespace reads the reports, and is refused every change, the app's Secret and other
// namespaces, with exit code 4.
func TestKubectlTenantry(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	admin := kubeUser(t, restConfig, "", f.ns)
	start := time.Now().Add(-time.Second)
	f.createOn(tenantryv1.HomeShard, "acme", "acme.plugin.test")
	f.createOn("west", "globex", "globex.plugin.test")
	f.createOn("nowhere", "broken", "broken.plugin.test")
	for _, n := range []string{"acme", "globex"} {
		f.waitReady(n)
		f.waitDrift(n, start)
	}
	f.waitCondition("broken", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonShardNotFound)
	must(t, eventually(30*time.Second, func() error {
		if f.get("acme").Status.Usage == nil || f.get("globex").Status.Usage == nil {
			return errNotYet
		}
		return nil
	}))

	// A compromised app login plants a trigger in globex's schema; the next pass finds it.
	plantTrigger(t, f.shardURL["west"], f.schema("globex"))
	f.waitPass(f.askPass())
	must(t, eventually(10*time.Second, func() error {
		if d := f.get("globex").Status.Drift; d == nil || d.Planted == 0 {
			return errNotYet
		}
		return nil
	}))

	t.Run("status", func(t *testing.T) {
		kubectlTenantry(t, admin, "status").expect(t, 5, "ExpenseApp "+f.ns+"/expenses",
			"Schema version:", fmt.Sprintf("%d; 2 of 3 tenants at it", release.Target()),
			"3, 2 Ready, 1 not Ready, 1 drifted (1 with planted code)",
			"SHARD", "west", "east", "Not Ready (1)", "broken", tenantryv1.ReasonShardNotFound,
			"Drifted (1", "globex", "Largest tenants", "acme", "1 tenant(s) not Ready")
		var report struct {
			Apps []struct {
				Name                  string
				Tenants, ReadyTenants int
				TenantsAtTarget       int
				Drifted, Planted      int
				Shards                []struct{ Name string }
				NotReady              []struct{ Name, Reason string }
				Largest               []struct {
					Name        string
					SchemaBytes int64
				}
			}
		}
		run := kubectlTenantry(t, admin, "status", "-o", "json")
		run.expect(t, 5)
		run.decode(t, &report)
		if len(report.Apps) != 1 {
			t.Fatalf("apps %+v, want the fixture's one", report.Apps)
		}
		a := report.Apps[0]
		if a.Name != "expenses" || a.Tenants != 3 || a.ReadyTenants != 2 || a.TenantsAtTarget != 2 || a.Drifted != 1 ||
			a.Planted != 1 || len(a.Shards) != 3 || len(a.NotReady) != 1 || a.NotReady[0].Name != "broken" ||
			a.NotReady[0].Reason != tenantryv1.ReasonShardNotFound || len(a.Largest) != 2 || a.Largest[0].SchemaBytes == 0 {
			t.Errorf("status -o json = %+v", a)
		}
	})

	t.Run("tenant", func(t *testing.T) {
		tn := f.get("acme")
		kubectlTenantry(t, admin, "tenant", "acme").expect(t, 0, "Tenant "+f.ns+"/acme", "Ready",
			"acme.plugin.test", "Shard:", "home", fmt.Sprintf("%s, version %d", tn.Status.Schema, release.Target()),
			"Usage:", "1 user (1 active)", "matches the release", "serving its users", "its first admin can sign in",
			"Events")
		kubectlTenantry(t, admin, "tenant", "broken").expect(t, 0, "Not Ready", tenantryv1.ReasonShardNotFound,
			"blocked: it needs a person", "Warning")
		var report struct {
			Tenant     tenantryv1.Tenant
			Conditions []struct{ Type, Says string }
			Events     []struct{ Reason string }
		}
		run := kubectlTenantry(t, admin, "tenant", "broken", "-o", "json")
		run.expect(t, 0)
		run.decode(t, &report)
		says := map[string]string{}
		for _, c := range report.Conditions {
			says[c.Type] = c.Says
		}
		if report.Tenant.Name != "broken" || says[tenantryv1.ConditionStalled] != "blocked: it needs a person" ||
			len(report.Events) == 0 {
			t.Errorf("tenant -o json = %+v", report)
		}
		kubectlTenantry(t, admin, "tenant", "nosuch").expect(t, 3, `no Tenant "nosuch"`)
		kubectlTenantry(t, admin, "tenant").expect(t, 2)
		kubectlTenantry(t, admin, "tenant", "acme", "-o", "xml").expect(t, 2, "unknown output format")
	})

	t.Run("drift", func(t *testing.T) {
		kubectlTenantry(t, admin, "drift").expect(t, 5, "globex", "planted trigger expenses.keep_copy",
			"1 tenant(s) drifted, 0 could not be compared")
		kubectlTenantry(t, admin, "drift", "-o", "wide").expect(t, 5, "FOUND", tenantryv1.ReasonCodePlanted)
		kubectlTenantry(t, admin, "migrate", "status", "-o", "wide").expect(t, 2, "takes json, yaml")
		var report struct {
			Compared int
			Drifted  []struct {
				Name    string
				Planted int
				Details []string
			}
		}
		run := kubectlTenantry(t, admin, "drift", "-o", "json")
		run.expect(t, 5)
		run.decode(t, &report)
		if report.Compared != 2 || len(report.Drifted) != 1 || report.Drifted[0].Name != "globex" ||
			report.Drifted[0].Planted == 0 || !strings.Contains(strings.Join(report.Drifted[0].Details, "\n"), "keep_copy") {
			t.Errorf("drift -o json = %+v", report)
		}
	})

	t.Run("migrate status", func(t *testing.T) {
		kubectlTenantry(t, admin, "migrate", "status").expect(t, 5,
			fmt.Sprintf("2 of 3 tenants at version %d", release.Target()), "Behind (1)", "broken", tenantryv1.ReasonShardNotFound)
		var report struct {
			Apps []struct {
				TenantsAtTarget int
				Behind          []struct{ Name, Reason string }
			}
		}
		run := kubectlTenantry(t, admin, "migrate", "status", "-o", "yaml")
		run.expect(t, 5, "tenantsAtTarget: 2", "name: broken")
		run = kubectlTenantry(t, admin, "migrate", "status", "-o", "json")
		run.decode(t, &report)
		if len(report.Apps) != 1 || report.Apps[0].TenantsAtTarget != 2 || len(report.Apps[0].Behind) != 1 ||
			report.Apps[0].Behind[0].Name != "broken" {
			t.Errorf("migrate status -o json = %+v", report)
		}
	})

	t.Run("suspend and resume", func(t *testing.T) {
		kubectlTenantry(t, admin, "suspend", "acme").expect(t, 0, "spec.suspend set to true", "suspended in")
		if reg, err := f.registry(f.schema("acme")); err != nil || reg.State != "suspended" || !f.get("acme").Spec.Suspend {
			t.Fatalf("after suspend: registry %+v (%v)", reg, err)
		}
		kubectlTenantry(t, admin, "suspend", "acme").expect(t, 0, "already suspended")
		kubectlTenantry(t, admin, "tenant", "acme").expect(t, 0, "suspended (the app answers its hosts with 503)")
		kubectlTenantry(t, admin, "resume", "acme", "--wait=false").expect(t, 0, "spec.suspend set to false")
		must(t, eventually(20*time.Second, func() error {
			if reg, err := f.registry(f.schema("acme")); err != nil || reg.State != "active" {
				return fmt.Errorf("registry %+v (%v)", reg, err)
			}
			return nil
		}))
	})

	t.Run("reset-admin", func(t *testing.T) {
		old := &corev1.Secret{}
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "acme-admin"}, old))
		kubectlTenantry(t, admin, "reset-admin", "acme").expect(t, 0, "Secret acme-admin deleted",
			"the first admin has a new password", "kubectl get secret acme-admin")
		now := &corev1.Secret{}
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "acme-admin"}, now))
		if now.UID == old.UID || string(now.Data["password"]) == string(old.Data["password"]) {
			t.Fatal("the admin Secret was not made again with a new password")
		}
		var hash string
		must(t, f.db.QueryRow(ctx, `SELECT password_hash FROM `+f.q("acme")+`.users WHERE role = 'admin'`).Scan(&hash))
		for pw, want := range map[string]bool{string(now.Data["password"]): true, string(old.Data["password"]): false} {
			if ok, err := password.Check(pw, hash); err != nil || ok != want {
				t.Errorf("the admin's password in the Secret of %s checks %t (%v), want %t", map[bool]string{true: "now", false: "before"}[want], ok, err, want)
			}
		}
	})

	t.Run("move", func(t *testing.T) {
		kubectlTenantry(t, admin, "move", "acme", "--to", "nowhere").expect(t, 2, `has no shard "nowhere"`, "home, east, west")
		run := kubectlTenantry(t, admin, "move", "acme", "--to", "west")
		run.expect(t, 0, "spec.shard set to west (from home)", "moved from home to west")
		if !strings.Contains(run.err, "move: ") {
			t.Errorf("no progress shown on standard error: %q", run.err)
		}
		if tn := f.get("acme"); tn.Status.Shard != "west" || f.schemaOn("acme")[0] != "west" {
			t.Fatalf("after move: status.shard %q, schema on %v", tn.Status.Shard, f.schemaOn("acme"))
		}
		kubectlTenantry(t, admin, "move", "acme", "--to", "west").expect(t, 0, "on shard west already")
	})

	t.Run("psql", func(t *testing.T) {
		bin, err := pgcluster.BinDir()
		must(t, err)
		psql := []string{"psql", "acme", "--psql-path", filepath.Join(bin, "psql"), "--"}
		// acme is on west now: psql connects to west, as the app's login switched to acme's role.
		kubectlTenantry(t, admin, append(psql, "-At", "-c", "SELECT current_user || ' ' || current_database() || ' ' || "+
			"(SELECT count(*) FROM users)")...).expect(t, 0, f.schema("acme")+" "+f.shardDB["west"].Config().ConnConfig.Database+" 1",
			"switched to role "+f.schema("acme"), "read-only")
		kubectlTenantry(t, admin, append(psql, "-c", "INSERT INTO departments (name) VALUES ('Support')")...).expect(t, 1,
			"read-only transaction")
		write := append([]string{"psql", "acme", "--write", "--psql-path", filepath.Join(bin, "psql"), "--"},
			"-c", "INSERT INTO departments (name) VALUES ('Support')")
		kubectlTenantry(t, admin, write...).expect(t, 0, "WRITES ON", "INSERT 0 1")
		// Another tenant's schema, on the same server: the tenant's role has no rights there.
		kubectlTenantry(t, admin, append(psql, "-c", "SELECT count(*) FROM "+f.q("globex")+".users")...).expect(t, 1,
			"permission denied")
		// RESET ROLE goes back to the role the session started as: the tenant's.
		kubectlTenantry(t, admin, append(psql, "-At", "-c", "RESET ROLE; SELECT current_user")...).expect(t, 0, f.schema("acme"))
		// A status that names another tenant's schema (anyone who may write a status can write one) is not
		// where psql goes: the registry, read as the app's login, says which schema is acme's.
		tn := f.get("acme")
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Status.Schema = f.schema("globex")
		must(t, k8s.Status().Patch(ctx, tn, patch))
		run := kubectlTenantry(t, admin, append(psql, "-At", "-c", "SELECT current_user")...)
		run.expect(t, 0, "switched to role "+f.schema("acme"))
		if strings.Contains(run.out, f.schema("globex")) {
			t.Errorf("psql acme went to globex's schema, which acme's status named: %s", run.out)
		}
	})

	t.Run("a reader of one namespace", func(t *testing.T) {
		must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "tenant-reader", Namespace: f.ns},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{tenantryv1.GroupVersion.Group}, Resources: []string{"tenants", "expenseapps"},
					Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"list"}}}}))
		must(t, k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tenant-reader", Namespace: f.ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant-reader"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "support@plugin.test"}}}))
		reader := kubeUser(t, restConfig, "support@plugin.test", f.ns)
		must(t, eventually(10*time.Second, func() error { // RBAC is cached by the API server a moment
			if kubectlTenantry(t, reader, "status").code != 5 {
				return errNotYet
			}
			return nil
		}))
		kubectlTenantry(t, reader, "tenant", "acme").expect(t, 0, "serving its users")
		kubectlTenantry(t, reader, "drift").expect(t, 5, "globex")
		kubectlTenantry(t, reader, "suspend", "acme").expect(t, 4, "you may not do this here")
		kubectlTenantry(t, reader, "reset-admin", "acme").expect(t, 4)
		kubectlTenantry(t, reader, "move", "acme", "--to", "home").expect(t, 4)
		kubectlTenantry(t, reader, "psql", "acme").expect(t, 4, "Secret expenses-app-db, which you may not read")
		kubectlTenantry(t, reader, "status", "-A").expect(t, 4)
		kubectlTenantry(t, reader, "status", "-n", "kube-system").expect(t, 4)
		if tn := f.get("acme"); tn.Spec.Suspend || tn.Spec.Shard != "west" {
			t.Fatalf("the reader changed the Tenant: %+v", tn.Spec)
		}
	})

	t.Run("completion", func(t *testing.T) {
		// kubectl's own completion, as a shell asks it: `kubectl tenantry tenant <TAB>`.
		kubectl(t, admin, "__complete", "tenantry", "tenant", "").expect(t, 0, "acme", "broken", "globex")
		kubectl(t, admin, "__complete", "tenantry", "move", "acme", "--to", "").expect(t, 0, "home", "east", "west")
		kubectl(t, admin, "__complete", "tenantry", "mi").expect(t, 0, "migrate")
		kubectlTenantry(t, admin, "completion", "zsh").expect(t, 0, "compdef")
	})
}

// plantTrigger adds a trigger (and its function) to a tenant's schema, as a compromised app login could.
func plantTrigger(t *testing.T, superuserURL, schema string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), superuserURL)
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	q := pgx.Identifier{schema}.Sanitize()
	_, err = conn.Exec(context.Background(), `BEGIN; SET LOCAL ROLE `+q+`; SET LOCAL search_path = `+q+`;
CREATE FUNCTION keep_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER keep_copy BEFORE INSERT ON expenses FOR EACH ROW EXECUTE FUNCTION keep_copy();
COMMIT`)
	must(t, err)
}
