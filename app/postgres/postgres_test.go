package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

var cluster *pgcluster.Throwaway

func TestMain(m *testing.M) { pgcluster.RunTests(m, &cluster) }

func setup(t *testing.T) (*postgres.DB, *app.Tenant) {
	t.Helper()
	ctx := context.Background()
	env, err := apptest.NewEnv(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	p, err := env.Provision(ctx, apptest.Tenant{Name: "store", Hosts: []string{"store.test"}, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(env.AppURL, postgres.Options{MaxConns: 20, PoolShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	reg := postgres.NewRegistry()
	if err := reg.Sync(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	tenant := reg.Lookup(p.Hosts[0])
	if tenant == nil {
		t.Fatal("tenant not in the registry")
	}
	return db, tenant
}

// Twenty admins giving budgets from one account at the same moment never commit more than it holds:
// the account row is locked while its commitments are added up.
func TestTx_CreateBudget_concurrentNeverOverCommits(t *testing.T) {
	db, tenant := setup(t)
	ctx := context.Background()
	var account int64
	month := app.FirstOfMonth(time.Now())
	err := db.InTenant(ctx, tenant, func(tx *postgres.Tx) error {
		a, err := tx.CreateAccount(ctx, "Grant", 100_00)
		if err != nil {
			return err
		}
		account = a.ID
		for i := range 20 {
			if _, err := tx.CreateDepartment(ctx, fmt.Sprintf("Dept %d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- db.InTenant(ctx, tenant, func(tx *postgres.Tx) error {
				_, err := tx.CreateBudget(ctx, postgres.BudgetInput{DepartmentID: int64(i + 1), AccountID: account,
					Month: month, AmountMinor: 30_00}) // 20 × 30.00 asked of 100.00
				return err
			})
		}()
	}
	wg.Wait()
	close(results)
	created, refused := 0, 0
	for err := range results {
		switch {
		case err == nil:
			created++
		case app.ErrorCode(err) == app.ECONFLICT:
			refused++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if created != 3 || refused != 17 {
		t.Fatalf("%d budgets created, %d refused; want 3 and 17", created, refused)
	}
	err = db.InTenant(ctx, tenant, func(tx *postgres.Tx) error {
		accounts, err := tx.Accounts(ctx)
		if err != nil {
			return err
		}
		if a := accounts[0]; a.CommittedMinor != 90_00 || a.AvailableMinor != 10_00 {
			return fmt.Errorf("account: %+v", a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The app's login role owns nothing and, outside a tenant transaction, reads no tenant data.
func TestDB_appRoleIsLeastPrivilege(t *testing.T) {
	db, tenant := setup(t)
	ctx := context.Background()
	var owned int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)`).Scan(&owned); err != nil {
		t.Fatal(err)
	}
	if owned != 0 {
		t.Fatalf("the app role owns %d relations", owned)
	}
	_, err := db.Pool().Exec(ctx, fmt.Sprintf(`SELECT * FROM %q.users`, tenant.Schema))
	if err == nil {
		t.Fatal("the app role read a tenant's users without acting as the tenant")
	}
	// After a tenant transaction the pooled connection carries no tenant role or search_path.
	if err := db.InTenant(ctx, tenant, func(tx *postgres.Tx) error { _, err := tx.Users(ctx); return err }); err != nil {
		t.Fatal(err)
	}
	var role, path string
	if err := db.Pool().QueryRow(ctx, `SELECT current_user::text, current_setting('search_path')`).Scan(&role, &path); err != nil {
		t.Fatal(err)
	}
	if role == tenant.Role || path == fmt.Sprintf("%q", tenant.Schema) {
		t.Fatalf("tenant state leaked onto the pool: role %s, search_path %s", role, path)
	}
}

// Behind PgBouncer, pool shards connect to PgBouncer aliases of the database (Options.PoolDatabases),
// each with a server pool of its own: each server connection serves only the tenants of its pool
// shard, so each backend caches the catalog of a share of the fleet. Every tenant is served its own
// schema, and PgBouncer opened server connections for each alias.
func TestDB_poolShardDatabasesThroughPgBouncer(t *testing.T) {
	if cluster.External() {
		t.Skip("PgBouncer needs the throwaway cluster")
	}
	ctx := context.Background()
	env, err := apptest.NewEnv(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	// Tenants until both pool shards serve one.
	var tenants []*apptest.Provisioned
	seen := map[int]bool{}
	for i := 0; len(seen) < 2 && i < 32; i++ {
		p, err := env.Provision(ctx, apptest.Tenant{Name: fmt.Sprintf("shop%d", i), Hosts: []string{fmt.Sprintf("shop%d.test", i)}})
		if err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, p)
		seen[postgres.PoolShard(p.Schema, 2)] = true
	}
	u, err := url.Parse(env.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	database := strings.TrimPrefix(u.Path, "/")
	b, err := pgcluster.BouncerConfig{BackendPort: cluster.Port, Users: map[string]string{env.AppRole: ""}, PoolSize: 2,
		PoolShards: map[string]int{database: 2}}.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	u.Host = fmt.Sprintf("127.0.0.1:%d", b.Port)
	db, err := postgres.Open(u.String(), postgres.Options{MaxConns: 4, PoolShards: 2, PoolDatabases: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	reg := postgres.NewRegistry()
	if err := reg.Sync(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	for _, p := range tenants {
		tenant := reg.Lookup(p.Hosts[0])
		if tenant == nil {
			t.Fatalf("tenant %s not in the registry", p.Schema)
		}
		err := db.InTenant(ctx, tenant, func(tx *postgres.Tx) error {
			d, err := tx.CreateDepartment(ctx, "Only "+p.Schema)
			if err != nil {
				return err
			}
			all, err := tx.Departments(ctx)
			if err != nil {
				return err
			}
			if len(all) != 1 || all[0].ID != d.ID {
				return fmt.Errorf("tenant %s sees departments %+v", p.Schema, all)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	log := b.Log()
	for i := range 2 {
		if alias := postgres.PoolDatabase(database, i) + "/"; !strings.Contains(log, alias) {
			t.Errorf("PgBouncer opened no server connection for %s: the pool shard did not use its alias\n%s", alias, log)
		}
	}
}
