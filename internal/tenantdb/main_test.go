package tenantdb

import (
	"context"
	"fmt"
	"os"
	"testing"

	"tenantry.dev/tenantry/internal/pgcluster"
)

var cluster *pgcluster.Throwaway

func TestMain(m *testing.M) {
	var err error
	cluster, err = pgcluster.StartThrowaway()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
		os.Exit(1)
	}
	code := m.Run()
	cluster.Close()
	os.Exit(code)
}

// openTestDB returns a DB on a fresh database of the test cluster, and that database's URL.
func openTestDB(t *testing.T) (*DB, string) {
	t.Helper()
	url, err := cluster.NewDatabase(context.Background(), "tenantdb")
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.EnsureRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, url
}
