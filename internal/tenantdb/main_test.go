package tenantdb

import (
	"context"
	"testing"

	"tenantry.dev/tenantry/internal/pgcluster"
)

var cluster *pgcluster.Throwaway

func TestMain(m *testing.M) { pgcluster.RunTests(m, &cluster) }

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
