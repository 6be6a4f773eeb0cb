package http_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/migrations"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func latest() int64 { return migrations.Latest }

func connectFunc(url string) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return nil, err
		}
		cfg.RuntimeParams["application_name"] = "tenantry-registry"
		return pgx.ConnectConfig(ctx, cfg)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func apptestTenant(name, host string) apptest.Tenant {
	return apptest.Tenant{Name: name, Hosts: []string{host}, Currency: "USD"}
}

// adminExec runs SQL as the database superuser.
func adminExec(t *testing.T, h *harness, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), h.env.AdminURL)
	must(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), sql)
	must(t, err)
}

func apptestTenantWith(name, host, currency string, threshold *int64) apptest.Tenant {
	return apptest.Tenant{Name: name, Hosts: []string{host}, Currency: currency, Threshold: threshold, PrimaryColor: "#1f7a3a"}
}

func today() string { return time.Now().Format("2006-01-02") }

// waitUntil polls ok until it is true, or fails once timeout has passed.
func waitUntil(timeout time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("still not so after %s", timeout)
		}
	}
	return nil
}
