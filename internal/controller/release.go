package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sync"

	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Release is the set of tenant schema migrations this operator brings and the version they end at: the
// version every tenant is moved to, and that the app image of this release needs.
type Release struct {
	mu     sync.RWMutex
	fsys   fs.FS
	target int64
	plan   *tenantdb.Plan
	key    string
}

// NewRelease reads the migrations of fsys.
func NewRelease(fsys fs.FS) (*Release, error) {
	r := &Release{}
	err := r.Set(fsys)
	return r, err
}

// Get returns the migrations and their target version.
func (r *Release) Get() (fs.FS, int64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.fsys, r.target
}

// Target is the schema version of the release.
func (r *Release) Target() int64 {
	_, t := r.Get()
	return t
}

// Key names the release's migrations: a digest of every file, which changes with any of them.
func (r *Release) Key() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.key
}

// Plan is the release's migrations parsed for a fleet rollout.
func (r *Release) Plan() *tenantdb.Plan {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.plan
}

// Set replaces the migrations: an operator restarted with a new release does this once at start; tests
// do it to stage a release without a restart. Every migration must run in a transaction (no
// "-- +goose NO TRANSACTION"): a fleet migrates each schema in one.
func (r *Release) Set(fsys fs.FS) error {
	target, err := migrations.LatestIn(fsys)
	if err != nil {
		return fmt.Errorf("reading migrations: %w", err)
	}
	plan, err := tenantdb.NewPlan(fsys)
	if err != nil {
		return fmt.Errorf("reading migrations: %w", err)
	}
	key, err := digest(fsys)
	if err != nil {
		return fmt.Errorf("reading migrations: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fsys, r.target, r.plan, r.key = fsys, target, plan, fmt.Sprintf("%d-%s", target, key)
	return nil
}

// digest is a digest of the names and contents of the files at the top of fsys, in name order.
func digest(fsys fs.FS) (string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return "", err
		}
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", e.Name(), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
