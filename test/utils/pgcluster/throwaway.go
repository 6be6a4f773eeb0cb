package pgcluster

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Throwaway is a test cluster: a fresh one in a temporary directory, or the server named by
// $TENANTRY_TEST_DATABASE_URL. Each test gets a database of its own from NewDatabase.
type Throwaway struct {
	*Cluster // nil when an external server is used
	adminURL string
	seq      atomic.Int64
}

// StartThrowaway starts a test cluster, or uses $TENANTRY_TEST_DATABASE_URL when set.
func StartThrowaway() (*Throwaway, error) {
	if u := os.Getenv("TENANTRY_TEST_DATABASE_URL"); u != "" {
		return &Throwaway{adminURL: u}, nil
	}
	dir, err := os.MkdirTemp("", "tenantry-pg-")
	if err != nil {
		return nil, err
	}
	c, err := New(dir, Options{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Throwaway{Cluster: c, adminURL: c.URL("postgres")}, nil
}

// External reports whether the cluster is someone else's server, which tests must not stop.
func (t *Throwaway) External() bool { return t.Cluster == nil }

// NewDatabase creates a fresh database with a unique name and returns its superuser URL.
func (t *Throwaway) NewDatabase(ctx context.Context, prefix string) (string, error) {
	name := fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano()%1e9, t.seq.Add(1))
	return CreateDatabase(ctx, t.adminURL, name)
}

// Close stops a cluster this process started and removes its directory.
func (t *Throwaway) Close() {
	if t.Cluster == nil {
		return
	}
	_ = t.Stop()
	_ = os.RemoveAll(t.Dir)
}

// RunTests runs a test binary's tests with a throwaway cluster in *cluster, then removes it and exits:
// the TestMain of every package that needs PostgreSQL.
func RunTests(m interface{ Run() int }, cluster **Throwaway) {
	c, err := StartThrowaway()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
		os.Exit(1)
	}
	*cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}
