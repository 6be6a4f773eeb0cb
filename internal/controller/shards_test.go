package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/apptest"
	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// otherServer is a second PostgreSQL server for shards, started by the first test that needs it and
// stopped after the suite.
var otherServer struct {
	once sync.Once
	pg   *pgcluster.Throwaway
	err  error
}

func secondServer(t *testing.T) *pgcluster.Throwaway {
	t.Helper()
	otherServer.once.Do(func() { otherServer.pg, otherServer.err = pgcluster.StartThrowaway() })
	if otherServer.err != nil {
		t.Fatalf("starting a second PostgreSQL server: %v", otherServer.err)
	}
	return otherServer.pg
}

// shardedFixture is a fixture whose ExpenseApp has two shards besides home: "east" on a second server,
// "west" in another database of the home server (so the roles, which are server-wide, already exist
// there).
type shardedFixture struct {
	*fixture
	shardURL map[string]string // superuser URLs, by shard
	shardDB  map[string]*pgxpool.Pool
}

func newShardedFixture(t *testing.T) *shardedFixture {
	t.Helper()
	ctx := context.Background()
	f := &shardedFixture{fixture: newFixture(t), shardURL: map[string]string{tenantryv1.HomeShard: ""},
		shardDB: map[string]*pgxpool.Pool{}}
	f.shardURL[tenantryv1.HomeShard] = f.url
	f.shardDB[tenantryv1.HomeShard] = f.db
	var err error
	if f.shardURL["east"], err = secondServer(t).NewDatabase(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	if f.shardURL["west"], err = pg.NewDatabase(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"east", "west"} {
		f.declare(s, f.shardURL[s])
		pool, err := pgxpool.New(ctx, f.shardURL[s])
		must(t, err)
		t.Cleanup(pool.Close)
		f.shardDB[s] = pool
	}
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Shards = []tenantryv1.ShardSpec{{Name: "east", ClusterDatabase: f.declared("east")},
		{Name: "west", ClusterDatabase: f.declared("west")}}
	must(t, k8s.Patch(ctx, app, patch))
	f.waitApp("three reachable shards", func(a *tenantryv1.ExpenseApp) bool {
		return len(a.Status.Shards) == 3 && a.Status.Shards[1].Reachable && a.Status.Shards[2].Reachable &&
			meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionShardsReady)
	})
	return f
}

// createOn creates a Tenant of the fixture placed on a shard (spec.shard).
func (f *shardedFixture) createOn(shard, name string, hosts ...string) {
	f.t.Helper()
	tn := f.tenant(name, hosts...)
	tn.Spec.Shard = shard
	must(f.t, k8s.Create(context.Background(), tn))
}

// schemaOn counts the tenant's schema on each shard's database.
func (f *shardedFixture) schemaOn(tenant string) []string {
	var on []string
	for _, s := range []string{tenantryv1.HomeShard, "east", "west"} {
		var n int
		must(f.t, f.shardDB[s].QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname = $1`,
			f.schema(tenant)).Scan(&n))
		if n > 0 {
			on = append(on, s)
		}
	}
	return on
}

// Tenants are placed by spec.shard and else on the shard with the fewest; each schema lives on its
// shard only, the home database routes them all, and the app (run here from its Secret, as its pods
// run, with PgBouncer in front of one shard) serves each tenant from its shard and no tenant from
// another's.
func TestShards_placementAndRouting(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()

	pinned := f.tenant("pinned", "pinned.shards.test")
	pinned.Spec.Shard = "east"
	must(t, k8s.Create(ctx, pinned))
	if got := f.waitReady("pinned").Status.Shard; got != "east" {
		t.Fatalf("pinned tenant placed on %q, want east", got)
	}
	names := []string{"s1", "s2", "s3", "s4", "s5", "s6"}
	for _, n := range names {
		must(t, k8s.Create(ctx, f.tenant(n, n+".shards.test")))
	}
	count := map[string]int{"east": 1}
	placed := map[string]string{"pinned": "east"}
	for _, n := range names {
		shard := f.waitReady(n).Status.Shard
		placed[n] = shard
		count[shard]++
	}
	for s, n := range count {
		if n < 2 || n > 3 {
			t.Errorf("shard %s holds %d of 7 tenants; placement by fewest tenants gives each 2 or 3: %v", s, n, placed)
		}
	}

	for name, shard := range placed {
		if on := f.schemaOn(name); !slices.Equal(on, []string{shard}) {
			t.Errorf("%s: schema found on %v, want only on %s", name, on, shard)
		}
		var recorded string
		must(t, f.db.QueryRow(ctx, `SELECT shard FROM tenantry.tenants WHERE namespace = $1 AND name = $2`, f.ns, name).Scan(&recorded))
		if want := map[bool]string{true: "", false: shard}[shard == tenantryv1.HomeShard]; recorded != want {
			t.Errorf("%s: home registry records shard %q, want %q", name, recorded, want)
		}
		if shard != tenantryv1.HomeShard {
			var rows, hosts int
			must(t, f.shardDB[shard].QueryRow(ctx, `SELECT count(*), (SELECT count(*) FROM tenantry.tenant_hosts)
FROM tenantry.tenants WHERE name = $1 AND shard = '' AND schema_version = $2`, name, migrations.Latest).Scan(&rows, &hosts))
			if rows != 1 || hosts != 0 {
				t.Errorf("%s: shard %s's registry has %d row(s) at version %d and %d host(s); want 1 and none (routing is home's)",
					name, shard, rows, migrations.Latest, hosts)
			}
		}
	}
	app := f.waitApp("tenant counts per shard", func(a *tenantryv1.ExpenseApp) bool {
		for _, s := range a.Status.Shards {
			if int(s.Tenants) != count[s.Name] || s.SchemaVersion != migrations.Latest {
				return false
			}
		}
		return len(a.Status.Shards) == 3
	})
	if app.Status.Shards[0].Name != tenantryv1.HomeShard {
		t.Errorf("status.shards does not list home first: %+v", app.Status.Shards)
	}

	// The app, from its Secret: one pool per shard, routed by host; east through PgBouncer.
	server := startApp(t, f.fixture, "east")
	sessions := map[string]string{}
	for name := range placed {
		sessions[name] = server.signIn(t, f.fixture, name)
		body := fmt.Sprintf(`{"name":"Dept of %s"}`, name)
		if status, out := server.call(t, name+".shards.test", "POST", "/api/v1/departments", body, sessions[name]); status != http.StatusCreated {
			t.Fatalf("%s (shard %s): creating a department: %d %s", name, placed[name], status, out)
		}
	}
	for name := range placed {
		status, out := server.call(t, name+".shards.test", "GET", "/api/v1/departments", "", sessions[name])
		if status != http.StatusOK || !strings.Contains(out, "Dept of "+name) {
			t.Errorf("%s: departments: %d %s", name, status, out)
		}
		for other := range placed {
			if other != name && strings.Contains(out, "Dept of "+other+`"`) {
				t.Errorf("%s sees %s's department", name, other)
			}
		}
	}
	// A session of one tenant means nothing on another's host, on the same shard or another.
	for _, other := range []string{"s1", "s2", "s3"} {
		if status, out := server.call(t, other+".shards.test", "GET", "/api/v1/departments", "", sessions["pinned"]); status == http.StatusOK {
			t.Errorf("pinned's session read %s's (shard %s) departments: %s", other, placed[other], out)
		}
	}

	// The app's own login on east (from its Secret), switched to the pinned tenant, reaches no other
	// tenant's schema there.
	var neighbour string
	for name, shard := range placed {
		if shard == "east" && name != "pinned" {
			neighbour = name
		}
	}
	sec := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses-app-db"}, sec))
	var logins map[string]string
	must(t, json.Unmarshal(sec.Data[tenantryv1.AppSecretShardsKey], &logins))
	conn, err := pgx.Connect(ctx, logins["east"])
	must(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	must(t, err)
	_, err = tx.Exec(ctx, "SELECT set_config('role', $1, true)", f.schema("pinned"))
	must(t, err)
	_, err = tx.Exec(ctx, "SELECT count(*) FROM "+f.q(neighbour)+".departments")
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the app's login on east, as pinned, read %s's departments: %v", neighbour, err)
	}
	_ = tx.Rollback(ctx)
}

// Hosts stay unique across shards (the home database arbitrates), a shard the app does not have is a
// clear stall, and a shard that still holds tenants cannot be removed.
func TestShards_conflictsAndRemoval(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	first := f.tenant("first", "taken.shards.test")
	first.Spec.Shard = "east"
	first.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, first))
	f.waitReady("first")

	dup := f.tenant("dup", "taken.shards.test")
	dup.Spec.Shard = "west"
	must(t, k8s.Create(ctx, dup))
	f.waitCondition("dup", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonHostConflict)
	if on := f.schemaOn("dup"); len(on) != 0 {
		t.Errorf("a tenant refused its host created a schema on %v", on)
	}

	lost := f.tenant("lost", "lost.shards.test")
	lost.Spec.Shard = "nowhere"
	must(t, k8s.Create(ctx, lost))
	tn := f.waitCondition("lost", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonShardNotFound)
	if c := meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionStalled); !strings.Contains(c.Message, `"nowhere"`) {
		t.Errorf("ShardNotFound message does not name the shard: %q", c.Message)
	}

	server := startApp(t, f.fixture)
	server.signIn(t, f.fixture, "first")

	// Removing east while "first" is on it: refused (ShardsReady False, and the app not Ready), while
	// east is still listed, reached and served. (This fixture's app has no image, so its Stalled
	// condition names that first.)
	app := f.getApp()
	appPatch := client.MergeFrom(app.DeepCopy())
	app.Spec.Shards = app.Spec.Shards[1:]
	must(t, k8s.Patch(ctx, app, appPatch))
	app = f.waitApp("ShardInUse", func(a *tenantryv1.ExpenseApp) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionShardsReady)
		return c != nil && c.Reason == tenantryv1.ReasonShardInUse && c.ObservedGeneration == a.Generation
	})
	if c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionShardsReady); !strings.Contains(c.Message, "first") {
		t.Errorf("ShardInUse does not name the tenant: %q", c.Message)
	}
	if len(app.Status.Shards) != 3 || app.Status.Shards[2].Name != "east" || !app.Status.Shards[2].Reachable {
		t.Errorf("status.shards after removing east from the spec: %+v", app.Status.Shards)
	}
	server.signIn(t, f.fixture, "first") // still served

	// Deleted with policy Delete: its schema goes from east, its rows from both registries; then east
	// may go.
	f.deleteTenant("first")
	if on := f.schemaOn("first"); len(on) != 0 {
		t.Errorf("deleted tenant's schema still on %v", on)
	}
	for _, s := range []string{tenantryv1.HomeShard, "east"} {
		var n int
		must(t, f.shardDB[s].QueryRow(ctx, `SELECT count(*) FROM tenantry.tenants WHERE name = 'first'`).Scan(&n))
		if n != 0 {
			t.Errorf("registry of %s still has the deleted tenant", s)
		}
	}
	f.waitApp("east gone", func(a *tenantryv1.ExpenseApp) bool {
		return len(a.Status.Shards) == 2 && meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionShardsReady)
	})
}

// A release's migration reaches every shard: one rollout over all of them, each shard migrated on its
// own connections, each schema's version recorded in its shard's registry, and every Tenant at the new
// version.
func TestShards_fleetMigration(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	names := make([]string, 9)
	for i := range names {
		names[i] = fmt.Sprintf("fm%d", i)
		must(t, k8s.Create(ctx, f.tenant(names[i], names[i]+".shards.test")))
	}
	placed := map[string]string{}
	for _, n := range names {
		placed[n] = f.waitReady(n).Status.Shard
	}
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nALTER TABLE expenses ADD COLUMN receipt_url text;\n")))
	next := migrations.Latest + 1
	pokeAll(t, f.fixture, names)
	f.waitApp("every tenant at the new version", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.TenantsAtTarget == int32(len(names)) && a.Status.TargetSchemaVersion == next
	})
	for _, n := range names {
		shard := placed[n]
		var version int64
		must(t, f.shardDB[shard].QueryRow(ctx, `SELECT schema_version FROM tenantry.tenants WHERE name = $1 AND shard = ''`, n).Scan(&version))
		var column int
		must(t, f.shardDB[shard].QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
WHERE table_schema = $1 AND table_name = 'expenses' AND column_name = 'receipt_url'`, f.schema(n)).Scan(&column))
		if version != next || column != 1 {
			t.Errorf("%s on %s: registry version %d (want %d), receipt_url column %d", n, shard, version, next, column)
		}
	}
	must(t, eventually(30*time.Second, func() error {
		for _, n := range names {
			if f.get(n).Status.SchemaVersion != next {
				return errNotYet
			}
		}
		return nil
	}))
}

// connector connects to a database for the app's LISTEN/NOTIFY.
func connector(uri string) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, uri) }
}

// runningApp is the expense app served in-process from its ExpenseApp's Secret, as its pods are.
type runningApp struct {
	*httptest.Server
	client *http.Client
	db     *postgres.DB
}

// startApp serves the app as its pods would, from its Secret; the shards named in bounced are reached
// through a PgBouncer in transaction mode of their own (LISTEN goes to the server directly, as it must).
func startApp(t *testing.T, f *fixture, bounced ...string) *runningApp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sec := &corev1.Secret{}
	must(t, eventually(20*time.Second, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses-app-db"}, sec)
	}))
	opts := postgres.Options{MaxConns: 6, PoolShards: 1}
	must(t, json.Unmarshal(sec.Data[tenantryv1.AppSecretShardsKey], &opts.Shards))
	listen := maps.Clone(opts.Shards)
	homeURI := string(sec.Data["uri"])
	for _, shard := range bounced {
		if shard == tenantryv1.HomeShard {
			homeURI = bounce(t, homeURI, string(sec.Data["username"]), string(sec.Data["password"]))
		} else {
			opts.Shards[shard] = bounce(t, opts.Shards[shard], string(sec.Data["username"]), string(sec.Data["password"]))
		}
	}
	db, err := postgres.Open(homeURI, opts)
	must(t, err)
	// The app's warnings and errors, shown if the test fails (a 500 says no more than "internal").
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the app's log:\n%s", logged.String())
		}
	})
	reg := postgres.NewRegistry()
	channel := string(sec.Data[channelKey])
	go func() { _ = reg.Run(ctx, channel, connector(string(sec.Data["uri"])), log) }()
	for name, u := range listen {
		go func() { _ = reg.RunShard(ctx, name, channel, connector(u), log) }()
	}
	if !slices.Contains(bounced, tenantryv1.HomeShard) {
		// On Citus, tenants go to their workers, as the app's default --citus-routing=workers has it;
		// behind PgBouncer, to the coordinator (citusRouting: Coordinator).
		go func() { _ = db.RunCitus(ctx, log) }()
	}
	srv := httptest.NewServer(apphttp.New(apphttp.Config{DB: db, Registry: reg, Log: log, SchemaVersion: migrations.Latest}))
	t.Cleanup(func() { srv.Close(); cancel(); db.Close() })
	<-reg.Loaded()
	return &runningApp{Server: srv, db: db, client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// syncBuffer is a bytes.Buffer that goroutines may write at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bounce starts a PgBouncer in transaction mode in front of the server of a connection string, for
// user (whose password it logs in to the server with), and returns the connection string through it.
func bounce(t *testing.T, uri, user, pass string) string {
	t.Helper()
	u, err := url.Parse(uri)
	must(t, err)
	port, err := strconv.Atoi(u.Port())
	must(t, err)
	b, err := pgcluster.StartBouncerFor(port, map[string]string{user: pass}, 2)
	must(t, err)
	t.Cleanup(b.Stop)
	u.Host = fmt.Sprintf("127.0.0.1:%d", b.Port)
	return u.String()
}

// call sends a request for a host and returns the status and body.
func (a *runningApp) call(t *testing.T, host, method, path, body, session string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, a.URL+path, strings.NewReader(body))
	req.Host = host
	switch {
	case strings.HasPrefix(body, "{"):
		req.Header.Set("Content-Type", "application/json")
	case body != "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if session != "" {
		req.Header.Set("Cookie", "tenantry_session="+session)
	}
	res, err := a.client.Do(req)
	must(t, err)
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// signIn signs in as a tenant's first admin, with the password of its Secret, at its first host, and
// returns the session. The app may take a moment to hear of a new tenant.
func (a *runningApp) signIn(t *testing.T, f *fixture, tenant string) string {
	t.Helper()
	tn := f.get(tenant)
	sec := &corev1.Secret{}
	must(t, k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: tenant + tenantryv1.AdminSecretSuffix}, sec))
	form := url.Values{"email": {string(sec.Data["email"])}, "password": {string(sec.Data["password"])}}.Encode()
	var session string
	err := eventually(10*time.Second, func() error {
		req, _ := http.NewRequest("POST", a.URL+"/login", strings.NewReader(form))
		req.Host = tn.Spec.Hosts[0]
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := a.client.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusSeeOther {
			return fmt.Errorf("sign-in: %d", res.StatusCode)
		}
		for _, c := range res.Cookies() {
			if c.Name == "tenantry_session" {
				session = c.Value
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", tenant, err)
	}
	return session
}

// A tenant moves between shards under continuous writes through the app's JSON API: home → east (another
// server, Retain), then east → west (Delete). No acknowledged write is lost, every row the old copy
// holds is in the new one unchanged, the old copy is kept renamed (or dropped), no replication is left
// behind, and a tenant on another shard is served throughout. The write pause is measured.
func TestShards_moveUnderLoad(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	f.createOn(tenantryv1.HomeShard, "mover", "mover.shards.test")
	f.createOn("west", "bystander", "bystander.shards.test")
	f.waitReady("mover")
	f.waitReady("bystander")

	server := startApp(t, f.fixture)
	session := server.signIn(t, f.fixture, "mover")
	bySession := server.signIn(t, f.fixture, "bystander")
	budget := server.setupBudget(t, "mover.shards.test", session)

	for i, target := range []string{"east", "west"} {
		policy := []tenantryv1.DeletionPolicy{tenantryv1.DeletionPolicyRetain, tenantryv1.DeletionPolicyDelete}[i]
		source := f.get("mover").Status.Shard
		w := startWriter(server, "mover.shards.test", session, budget, fmt.Sprintf("move%d-", i))
		time.Sleep(300 * time.Millisecond) // writes under way before the move starts
		tn := f.get("mover")
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.Shard, tn.Spec.DeletionPolicy = target, policy
		must(t, k8s.Patch(ctx, tn, patch))
		must(t, eventually(60*time.Second, func() error {
			tn := f.get("mover")
			if tn.Status.Shard != target || meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) != nil {
				return fmt.Errorf("shard %s, conditions %+v", tn.Status.Shard, tn.Status.Conditions)
			}
			return nil
		}))
		time.Sleep(300 * time.Millisecond) // and after it
		res := w.Stop()
		t.Logf("move %s → %s: %d writes acknowledged, longest write pause %s, %d refused with 503", source, target,
			len(res.Acked), res.Pause.Round(time.Millisecond), res.Refusals)
		if res.Errors > 0 {
			t.Errorf("%d writes during the move got an answer other than 201 or 503: %q", res.Errors, res.Unexpected)
		}

		// Every acknowledged write is on the target.
		var found int
		must(t, f.shardDB[target].QueryRow(ctx, `SELECT count(*) FROM `+f.q("mover")+`.expenses WHERE description = ANY($1)`,
			res.Acked).Scan(&found))
		if found != len(res.Acked) || len(res.Acked) == 0 {
			t.Fatalf("move %s → %s: %d of %d acknowledged writes lost", source, target, len(res.Acked)-found, len(res.Acked))
		}
		if on := f.schemaOn("mover"); !slices.Equal(on, []string{target}) {
			t.Errorf("after the move the schema %s is on %v, want only %s", f.schema("mover"), on, target)
		}
		var recorded string
		must(t, f.db.QueryRow(ctx, `SELECT shard FROM tenantry.tenants WHERE name = 'mover'`).Scan(&recorded))
		if recorded != registry.ShardColumn(target) {
			t.Errorf("home registry says shard %q, want %q", recorded, registry.ShardColumn(target))
		}
		// The copy left behind: kept renamed with every row the target has (Retain), or gone (Delete).
		rows, _ := f.shardDB[source].Query(ctx, `SELECT schema_name FROM tenantry.moved_schemas WHERE name = 'mover' AND moved_to = $1`, target)
		kept, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		switch policy {
		case tenantryv1.DeletionPolicyRetain:
			if len(kept) != 1 {
				t.Fatalf("Retain: the copy left on %s is not recorded: %v", source, kept)
			}
			for _, table := range []string{"departments", "funding_accounts", "budgets", "expenses", "users", "goose_db_version"} {
				old := tableRows(t, f.shardDB[source], kept[0], table)
				now := tableRows(t, f.shardDB[target], f.schema("mover"), table)
				missing := 0
				for r := range old {
					if !now[r] {
						missing++
					}
				}
				if missing > 0 || len(old) == 0 {
					t.Errorf("%s: %d of the %d rows of the old copy are not in the new one", table, missing, len(old))
				}
			}
		case tenantryv1.DeletionPolicyDelete:
			if len(kept) != 0 {
				t.Errorf("Delete: the copy left on %s was kept: %v", source, kept)
			}
		}
		var left int
		must(t, f.shardDB[source].QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)`).Scan(&left))
		var subs int
		must(t, f.shardDB[target].QueryRow(ctx, `SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&subs))
		if left+subs != 0 {
			t.Errorf("replication left behind: %d publication(s)/slot(s) on %s, %d subscription(s) on %s", left, source, subs, target)
		}
		if status, out := server.call(t, "bystander.shards.test", "GET", "/api/v1/departments", "", bySession); status != http.StatusOK {
			t.Errorf("the tenant on west during the move: %d %s", status, out)
		}
	}
}

// tableRows reads every row of a table as text.
func tableRows(t *testing.T, db *pgxpool.Pool, schema, table string) map[string]bool {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT t::text FROM `+pgx.Identifier{schema, table}.Sanitize()+` t`)
	must(t, err)
	out := map[string]bool{}
	for rows.Next() {
		var s string
		must(t, rows.Scan(&s))
		out[s] = true
	}
	must(t, rows.Err())
	return out
}

// startWriter writes expenses for a tenant through the app, signed in with session.
func startWriter(a *runningApp, host, session string, budget int64, prefix string) *apptest.Writer {
	return apptest.StartWriter(a.client, a.URL, host, budget, prefix, func(r *http.Request) {
		r.Header.Set("Cookie", "tenantry_session="+session)
	})
}

// seedExpenses adds n expenses to a tenant's schema directly (as the superuser), for a copy that takes a
// while; the tenant's budget 1 and user 1 (its admin) must exist.
func seedExpenses(t *testing.T, db *pgxpool.Pool, schema string, n int) {
	t.Helper()
	_, err := db.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{schema}.Sanitize()+`.expenses
    (budget_id, spent_on, description, amount_minor, created_by)
SELECT 1, current_date, 'seed ' || g, 100, 1 FROM generate_series(1, $1) g`, n)
	must(t, err)
}

// setupBudget creates a department, funding account and budget for a tenant through the app's API.
func (a *runningApp) setupBudget(t *testing.T, host, session string) (budget int64) {
	t.Helper()
	// Ids come from the answers: on Citus, a row written on a worker takes its id from that worker's
	// range of the sequence.
	create := func(path, body string) int64 {
		t.Helper()
		status, out := a.call(t, host, "POST", path, body, session)
		var created struct{ ID int64 }
		if status != http.StatusCreated || json.Unmarshal([]byte(out), &created) != nil || created.ID == 0 {
			t.Fatalf("POST %s: %d %s", path, status, out)
		}
		return created.ID
	}
	dept := create("/api/v1/departments", `{"name":"Sales"}`)
	account := create("/api/v1/accounts", `{"name":"Budget","totalMinor":100000000000}`)
	return create("/api/v1/budgets", fmt.Sprintf(`{"departmentId":%d,"accountId":%d,"month":%q,"amountMinor":50000000000}`,
		dept, account, time.Now().Format("2006-01")))
}

// The target server stops in the middle of a move: the tenant keeps being served, writes included, from
// its old shard, while the tenants on the stopped shard get 503s and every other tenant is served. When
// the server is back, the move completes with every row.
func TestShards_targetOutageDuringMove(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	f.createOn(tenantryv1.HomeShard, "mover", "mover.shards.test")
	f.createOn("east", "resident", "resident.shards.test")
	f.waitReady("mover")
	f.waitReady("resident")
	server := startApp(t, f.fixture)
	session := server.signIn(t, f.fixture, "mover")
	residentSession := server.signIn(t, f.fixture, "resident")
	server.setupBudget(t, "mover.shards.test", session)
	const seeded = 200000
	seedExpenses(t, f.db, f.schema("mover"), seeded)

	tn := f.get("mover")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Shard = "east"
	must(t, k8s.Patch(ctx, tn, patch))
	f.waitCondition("mover", tenantryv1.ConditionMoving, metav1.ConditionTrue, tenantryv1.ReasonProgressing)
	east := secondServer(t)
	must(t, east.Stop())
	restarted := false
	defer func() {
		if !restarted {
			_ = east.Start()
		}
	}()
	if got := f.get("mover").Status.Shard; got != tenantryv1.HomeShard {
		t.Fatalf("the move cut over before the outage (shard %s): no fault was tested", got)
	}

	// While east is away: the mover writes on home, the resident of east gets 503s, and nothing else.
	var acked []string
	for i := range 5 {
		desc := fmt.Sprintf("during outage %d", i)
		body := fmt.Sprintf(`{"budgetId":1,"spentOn":%q,"description":%q,"amountMinor":100}`, time.Now().Format("2006-01-02"), desc)
		if status, out := server.call(t, "mover.shards.test", "POST", "/api/v1/expenses", body, session); status != http.StatusCreated {
			t.Fatalf("the moving tenant's write while its target is away: %d %s", status, out)
		}
		acked = append(acked, desc)
	}
	if status, _ := server.call(t, "resident.shards.test", "GET", "/api/v1/departments", "", residentSession); status != http.StatusServiceUnavailable {
		t.Errorf("a tenant of the stopped shard: %d, want 503", status)
	}
	if c := meta.FindStatusCondition(f.get("mover").Status.Conditions, tenantryv1.ConditionMoving); c == nil {
		t.Error("the move was given up while its target was away for a moment")
	}

	must(t, east.Start())
	restarted = true
	must(t, eventually(60*time.Second, func() error {
		tn := f.get("mover")
		if tn.Status.Shard != "east" || meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) != nil {
			return fmt.Errorf("shard %s, conditions %+v", tn.Status.Shard, tn.Status.Conditions)
		}
		return nil
	}))
	var rows, found int
	must(t, f.shardDB["east"].QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE description = ANY($1)) FROM `+
		f.q("mover")+`.expenses`, acked).Scan(&rows, &found))
	if rows != seeded+len(acked) || found != len(acked) {
		t.Errorf("after the move: %d expenses on east (want %d), %d of the %d written during the outage", rows, seeded+len(acked), found, len(acked))
	}
	if status, out := server.call(t, "mover.shards.test", "GET", "/api/v1/departments", "", session); status != http.StatusOK {
		t.Errorf("the moved tenant, served from east: %d %s", status, out)
	}
}

// A move's target is closed to the app's login until the cut-over: while the subscription copies the
// tenant to the other server, the app's login there cannot act as the tenant (so it cannot plant a
// trigger, rule or check that the subscription's apply worker, which runs as its superuser owner on
// PostgreSQL 15, would run), and the target's publication found under the move's name is the move's own.
// After the cut-over it can, and it serves the tenant there.
func TestShards_moveTargetClosedToTheAppLogin(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	f.createOn(tenantryv1.HomeShard, "mover", "mover.shards.test")
	f.waitReady("mover")
	east := f.shardDB["east"].Config().ConnConfig
	appEast := f.appLoginTo(func(cfg *pgx.ConnConfig) { cfg.Host, cfg.Port, cfg.Database = east.Host, east.Port, east.Database })
	schema := f.schema("mover")
	s := f.q("mover")
	// Enough rows that the copy is seen under way.
	_, err := f.db.Exec(ctx, `
INSERT INTO `+s+`.departments (name) VALUES ('Ops');
INSERT INTO `+s+`.funding_accounts (name, total_minor) VALUES ('Main', 100000);
INSERT INTO `+s+`.budgets (department_id, account_id, month, amount_minor)
  SELECT d.id, a.id, date '2026-11-01', 50000 FROM `+s+`.departments d, `+s+`.funding_accounts a`)
	must(t, err)
	seedExpenses(t, f.db, schema, 200000)
	var app string
	must(t, appEast.QueryRow(ctx, "SELECT current_user").Scan(&app))

	tn := f.get("mover")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Shard = "east"
	must(t, k8s.Patch(ctx, tn, patch))
	copying := 0
	must(t, eventually(60*time.Second, func() error {
		// Copying (a table of the subscription not yet ready) is before the cut-over, which waits for
		// all of them; membership and copy are read at one instant.
		var inCopy, member bool
		if err := f.shardDB["east"].QueryRow(ctx, `
SELECT EXISTS (SELECT FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = $1 AND sr.srsubstate <> 'r'),
       coalesce((SELECT pg_has_role($2, oid, 'MEMBER') FROM pg_roles WHERE rolname = $3), false)`,
			tenantdb.MoveName(schema), app, schema).Scan(&inCopy, &member); err != nil {
			return err
		}
		if inCopy {
			copying++
			if member {
				t.Fatal("the app's login is a member of the tenant's role on the move's target while the copy runs")
			}
			if err := setRole(appEast, schema); !isPermissionDenied(err) {
				t.Fatalf("the app's login acting as the tenant on the move's target during the copy: %v, want permission denied", err)
			}
		}
		tn := f.get("mover")
		if tn.Status.Shard != "east" || meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) != nil {
			return errNotYet
		}
		return nil
	}))
	if copying == 0 {
		t.Fatal("never saw the move's subscription before the cut-over: nothing was checked")
	}
	if err := setRole(appEast, schema); err != nil {
		t.Fatalf("the app's login cannot act as the tenant on its new shard after the cut-over: %v", err)
	}
	t.Logf("the app's login was refused the target %d times during the copy", copying)
}

// The API and the registry call home by one name.
func TestShards_homeSpelledOnce(t *testing.T) {
	if tenantryv1.HomeShard != registry.HomeShard {
		t.Fatalf("the API calls home %q, the registry %q", tenantryv1.HomeShard, registry.HomeShard)
	}
}

// A move that has not cut over within the app's spec.moveDeadline is given up: the source's
// publication and slot go (it keeps no WAL for the move), the target's copy goes, the tenant is served
// from where it was and says why (MoveFailed). Here the target's server is away past the deadline.
func TestShards_moveDeadline(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.MoveDeadline = &metav1.Duration{Duration: 3 * time.Second}
	must(t, k8s.Patch(ctx, app, patch))
	f.createOn(tenantryv1.HomeShard, "late", "late.shards.test")
	f.waitReady("late")
	_, err := f.db.Exec(ctx, `INSERT INTO `+f.q("late")+`.departments (name) SELECT 'department ' || g FROM generate_series(1, 50000) g`)
	must(t, err)

	tn := f.get("late")
	tpatch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Shard = "east"
	must(t, k8s.Patch(ctx, tn, tpatch))
	f.waitCondition("late", tenantryv1.ConditionMoving, metav1.ConditionTrue, tenantryv1.ReasonProgressing)
	east := secondServer(t)
	must(t, east.Stop())
	time.Sleep(4 * time.Second)
	must(t, east.Start())

	stalled := f.waitCondition("late", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonMoveFailed)
	if msg := findCondition(stalled, tenantryv1.ConditionReady).Message; !strings.Contains(msg, "spec.moveDeadline") {
		t.Errorf("the given-up move says %q, want the deadline named", msg)
	}
	if stalled.Status.Shard != tenantryv1.HomeShard {
		t.Errorf("the tenant is on shard %s after its move was given up, want home", stalled.Status.Shard)
	}
	for what, q := range map[string]string{
		"publications": `SELECT count(*) FROM pg_publication`,
		"slots":        `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`,
		"logins":       `SELECT count(*) FROM pg_roles WHERE rolname = '` + tenantdb.MoveName(f.schema("late")) + `'`,
	} {
		if n := f.count(q); n != 0 {
			t.Errorf("the source keeps %d %s of the given-up move", n, what)
		}
	}
	if on := f.schemaOn("late"); len(on) != 1 || on[0] != tenantryv1.HomeShard {
		t.Errorf("the tenant's schema is on %v after the move was given up, want home alone", on)
	}
	// Nor does the operator report WAL kept for it any more (TenantryMoveSlotLag).
	resp, err := http.Get(metricsURL)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "\ntenantry_move_slot_lag_bytes 0\n") {
		t.Error("tenantry_move_slot_lag_bytes is not 0 once the only move was given up")
	}
}

// A move's subscription connects to the source as the move's own replication login, never as the
// source's admin: what the target keeps in pg_subscription for the length of the move names that login
// and its password, and the source's walsender runs as it. The login replicates and reads the tenant's
// tables and nothing more (no superuser, no roles, no databases), and it is gone once the move is over.
func TestShards_moveSubscribesAsItsOwnLogin(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	f.createOn(tenantryv1.HomeShard, "sub", "sub.shards.test")
	f.waitReady("sub")
	login := tenantdb.MoveName(f.schema("sub"))

	type seen struct {
		conninfo, walsender string
		super, createRole   bool
		replication, bypass bool
	}
	found := make(chan seen, 1)
	stop := make(chan struct{})
	go func() {
		var s seen
		for {
			select {
			case <-stop:
				found <- s
				return
			default:
			}
			if s.conninfo == "" {
				_ = f.shardDB["east"].QueryRow(ctx, `SELECT subconninfo FROM pg_subscription WHERE subname = $1`, login).Scan(&s.conninfo)
			}
			if s.walsender == "" {
				_ = f.db.QueryRow(ctx, `SELECT usename FROM pg_stat_replication WHERE application_name = $1`, login).Scan(&s.walsender)
				_ = f.db.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1`,
					login).Scan(&s.super, &s.createRole, &s.replication, &s.bypass)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	tn := f.get("sub")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Shard = "east"
	must(t, k8s.Patch(ctx, tn, patch))
	err := eventually(60*time.Second, func() error {
		tn := f.get("sub")
		if tn.Status.Shard != "east" || meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) != nil {
			return errNotYet
		}
		return nil
	})
	close(stop)
	s := <-found
	if err != nil {
		t.Fatalf("the tenant never moved: %+v", f.get("sub").Status.Conditions)
	}
	cfg, perr := pgx.ParseConfig(s.conninfo)
	switch {
	case s.conninfo == "":
		t.Fatal("the target's subscription was never seen")
	case perr != nil:
		t.Fatalf("the subscription's connection string does not parse: %v", perr)
	case cfg.User != login || cfg.Password == "":
		t.Errorf("the subscription connects as %q (password set: %v), want the move's login %q with a password of its own",
			cfg.User, cfg.Password != "", login)
	}
	if s.walsender != "" && s.walsender != login {
		t.Errorf("the source's walsender runs as %q, want %q", s.walsender, login)
	}
	if s.super || s.createRole || !s.replication || !s.bypass {
		t.Errorf("the move's login: superuser %v, createrole %v, replication %v, bypassrls %v; want only replication and bypassrls",
			s.super, s.createRole, s.replication, s.bypass)
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1`, login); n != 0 {
		t.Errorf("the move's login outlives the move")
	}
	f.waitReady("sub")
}
