package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/internal/registry"
)

// A refresh that fails is not left until the next reconnect: the registry is read again, with backoff,
// until it works. Here the app's login loses and regains its right to read the registry while a tenant
// is suspended; the listener's connection stays up throughout.
func TestRegistry_Run_failedRefreshIsRetried(t *testing.T) {
	ctx := context.Background()
	env, err := apptest.NewEnv(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	p, err := env.Provision(ctx, apptest.Tenant{Name: "flaky", Hosts: []string{"flaky.test"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := postgres.NewRegistry()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = reg.Run(rctx, env.Channel, func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, env.AppURL) },
			slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-reg.Loaded()
	syncs := reg.Syncs()

	admin, err := pgx.Connect(ctx, env.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	role := pgx.Identifier{env.AppRole}.Sanitize()
	if _, err := admin.Exec(ctx, "REVOKE SELECT ON tenantry.tenants FROM "+role); err != nil {
		t.Fatal(err)
	}
	if err := env.Admin.SetState(ctx, p.Schema, registry.StateSuspended, migrations.Latest); err != nil {
		t.Fatal(err)
	}
	// The notification's refresh fails, and so do the re-reads while the right is missing.
	time.Sleep(time.Second)
	if got := reg.Lookup("flaky.test"); got == nil || got.State != app.StateActive {
		t.Fatalf("while the registry cannot be read, the tenant should stay as last known (active): %+v", got)
	}
	if _, err := admin.Exec(ctx, "GRANT SELECT ON tenantry.tenants TO "+role); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for reg.Lookup("flaky.test").State != app.StateSuspended {
		if time.Now().After(deadline) {
			t.Fatal("the registry did not catch up within 15 s of being readable again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if reg.Syncs() <= syncs {
		t.Errorf("caught up without a full re-read (syncs %d, before %d)", reg.Syncs(), syncs)
	}
}
