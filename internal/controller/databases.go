package controller

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Databases keeps one tenantdb.DB per ExpenseApp, reopened when the app's connection string changes.
// The connection string is read from the Secret only when database work is due, never cached in the
// manager's informers: the operator watches no Secrets but its own.
type Databases struct {
	// Reader reads the database Secrets (an uncached client).
	Reader client.Reader

	mu    sync.Mutex
	dbs   map[types.NamespacedName]*appDB
	cache map[types.NamespacedName]cachedURI
}

type appDB struct {
	sum [32]byte // of the connection string and pool sizes
	db  *tenantdb.DB
}

// URI reads an ExpenseApp's admin connection string from its Secret. A missing Secret or key is a wait
// error, with a message that says what to fix.
func (d *Databases) URI(ctx context.Context, app *tenantryv1.ExpenseApp) (string, error) {
	c, err := d.uris(ctx, app)
	return c.uri, err
}

// uris reads an ExpenseApp's admin connection string, and the app login's from the app's Secret (empty
// while that Secret does not exist yet).
func (d *Databases) uris(ctx context.Context, app *tenantryv1.ExpenseApp) (cachedURI, error) {
	ref := app.Spec.Database.SecretRef
	name := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	// A fleet migration asks once per tenant; a few seconds' memory saves as many API round trips, and a
	// rotated connection string is still picked up within secretTTL.
	d.mu.Lock()
	if c, ok := d.cache[name]; ok && time.Since(c.at) < secretTTL && c.ref == ref {
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	key := app.DatabaseSecretKey()
	var secret corev1.Secret
	if err := d.Reader.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return cachedURI{}, waitErr(tenantryv1.ReasonSecretNotFound, 10*time.Second,
				"Secret %s/%s named by ExpenseApp %s (spec.database.secretRef) does not exist",
				app.Namespace, ref.Name, app.Name)
		}
		return cachedURI{}, retryErr(tenantryv1.ReasonSecretNotFound, err)
	}
	c := cachedURI{ref: ref, uri: string(secret.Data[key]), at: time.Now()}
	if c.uri == "" {
		return cachedURI{}, waitErr(tenantryv1.ReasonInvalidSecret, 10*time.Second,
			"Secret %s/%s has no key %q holding the database connection string", app.Namespace, ref.Name, key)
	}
	var appSecret corev1.Secret
	err := d.Reader.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: appSecretName(app)}, &appSecret)
	if err != nil && !apierrors.IsNotFound(err) {
		return cachedURI{}, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading Secret %s: %w", appSecretName(app), err))
	}
	c.appURI = string(appSecret.Data["uri"])
	if c.appURI == "" {
		return c, nil // not remembered: the app's Secret is about to be created
	}
	d.mu.Lock()
	if d.cache == nil {
		d.cache = map[types.NamespacedName]cachedURI{}
	}
	d.cache[name] = c
	d.mu.Unlock()
	return c, nil
}

// Reread makes the next call read an ExpenseApp's Secrets again: its app Secret was just written.
func (d *Databases) Reread(app types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.cache, app)
}

// secretTTL is how long a database Secret's connection string is reused before it is read again.
const secretTTL = 5 * time.Second

type cachedURI struct {
	ref    tenantryv1.SecretKeyRef
	uri    string // the admin's
	appURI string // the app login's, for work inside tenant schemas
	at     time.Time
}

// For returns the database of an ExpenseApp, opened anew when its connection string changed. A
// connection string that does not parse is a stall error.
func (d *Databases) For(ctx context.Context, app *tenantryv1.ExpenseApp) (*tenantdb.DB, error) {
	c, err := d.uris(ctx, app)
	if err != nil {
		return nil, err
	}
	uri := c.uri
	ref := app.Spec.Database.SecretRef
	key := app.DatabaseSecretKey()
	opts := tenantdb.Options{MaxConcurrentMigrations: app.Spec.Migrations.MaxConcurrent, TenantURI: c.appURI}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", uri, c.appURI, opts.MaxConcurrentMigrations))

	name := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.dbs[name]; ok {
		if cur.sum == sum {
			return cur.db, nil
		}
		cur.db.Close()
		delete(d.dbs, name)
	}
	db, err := tenantdb.Open(uri, opts)
	if err != nil {
		return nil, stallErr(tenantryv1.ReasonInvalidSecret, time.Minute,
			fmt.Errorf("Secret %s/%s key %q: %v", app.Namespace, ref.Name, key, err))
	}
	if d.dbs == nil {
		d.dbs = map[types.NamespacedName]*appDB{}
	}
	d.dbs[name] = &appDB{sum: sum, db: db}
	return db, nil
}

// Forget closes the database of an ExpenseApp that is gone.
func (d *Databases) Forget(name types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.dbs[name]; ok {
		cur.db.Close()
		delete(d.dbs, name)
	}
	delete(d.cache, name)
}

// Close closes every database.
func (d *Databases) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, cur := range d.dbs {
		cur.db.Close()
		delete(d.dbs, name)
	}
}

// Statements is the number of SQL statements sent so far to the database of an ExpenseApp, or -1 when
// none is open. Tests use it to prove that a reconcile did no database work.
func (d *Databases) Statements(app types.NamespacedName) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.dbs[app]; ok {
		return cur.db.Statements()
	}
	return -1
}
