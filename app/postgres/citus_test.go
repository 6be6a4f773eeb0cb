package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

// A worker's connection string is the app's, with the worker's host and port: the same login and
// database, and TLS that verifies the worker's name, not the coordinator's.
func TestWorkerURL(t *testing.T) {
	w := workerAddr{host: "citus-worker-1-rw.db", port: 6432}
	for _, base := range []string{
		"postgres://app:s3cret@citus-coordinator-rw.db:5432/tenantry?sslmode=verify-full",
		"host=citus-coordinator-rw.db port=5432 user=app password=s3cret dbname=tenantry sslmode=verify-full",
	} {
		cfg, err := pgx.ParseConfig(workerURL(base, w))
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		if cfg.Host != w.host || cfg.Port != w.port || cfg.User != "app" || cfg.Password != "s3cret" || cfg.Database != "tenantry" {
			t.Errorf("%s: worker config %s:%d user %s database %s", base, cfg.Host, cfg.Port, cfg.User, cfg.Database)
		}
		if cfg.TLSConfig == nil || cfg.TLSConfig.ServerName != w.host {
			t.Errorf("%s: TLS verifies %v, want the worker's name", base, cfg.TLSConfig)
		}
	}
}
