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

	mu   sync.Mutex
	dbs  map[types.NamespacedName]*appDB
	uris map[types.NamespacedName]cachedURI
}

type appDB struct {
	sum [32]byte // of the connection string and pool sizes
	db  *tenantdb.DB
}

// URI reads an ExpenseApp's admin connection string from its Secret. A missing Secret or key is a wait
// error, with a message that says what to fix.
func (d *Databases) URI(ctx context.Context, app *tenantryv1.ExpenseApp) (string, error) {
	ref := app.Spec.Database.SecretRef
	name := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	// A fleet migration asks once per tenant; a few seconds' memory saves as many API round trips, and a
	// rotated connection string is still picked up within secretTTL.
	d.mu.Lock()
	if c, ok := d.uris[name]; ok && time.Since(c.at) < secretTTL && c.ref == ref {
		d.mu.Unlock()
		return c.uri, nil
	}
	d.mu.Unlock()
	key := app.DatabaseSecretKey()
	var secret corev1.Secret
	if err := d.Reader.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", waitErr(tenantryv1.ReasonSecretNotFound, 10*time.Second,
				"Secret %s/%s named by ExpenseApp %s (spec.database.secretRef) does not exist",
				app.Namespace, ref.Name, app.Name)
		}
		return "", retryErr(tenantryv1.ReasonSecretNotFound, err)
	}
	uri := string(secret.Data[key])
	if uri == "" {
		return "", waitErr(tenantryv1.ReasonInvalidSecret, 10*time.Second,
			"Secret %s/%s has no key %q holding the database connection string", app.Namespace, ref.Name, key)
	}
	d.mu.Lock()
	if d.uris == nil {
		d.uris = map[types.NamespacedName]cachedURI{}
	}
	d.uris[name] = cachedURI{ref: ref, uri: uri, at: time.Now()}
	d.mu.Unlock()
	return uri, nil
}

// secretTTL is how long a database Secret's connection string is reused before it is read again.
const secretTTL = 5 * time.Second

type cachedURI struct {
	ref tenantryv1.SecretKeyRef
	uri string
	at  time.Time
}

// For returns the database of an ExpenseApp, opened anew when its connection string changed. A
// connection string that does not parse is a stall error.
func (d *Databases) For(ctx context.Context, app *tenantryv1.ExpenseApp) (*tenantdb.DB, error) {
	uri, err := d.URI(ctx, app)
	if err != nil {
		return nil, err
	}
	ref := app.Spec.Database.SecretRef
	key := app.DatabaseSecretKey()
	opts := tenantdb.Options{MaxConcurrentMigrations: app.Spec.Migrations.MaxConcurrent}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", uri, opts.MaxConcurrentMigrations))

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
	delete(d.uris, name)
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
