package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Databases keeps one tenantdb.DB per shard of each ExpenseApp (the home database is shard "home"),
// reopened when a connection string changes. Connection strings are read from their Secrets only when
// database work is due, never cached in the manager's informers: the operator watches no Secrets but
// its own.
type Databases struct {
	// Reader reads the database Secrets and the apps' Namespaces (an uncached client).
	Reader client.Reader
	// Declarations reads the ClusterDatabases (the manager's cache).
	Declarations client.Reader
	// PlatformNamespace holds the Secrets that ClusterDatabases name: the operator's own namespace.
	PlatformNamespace string
	// NamespacedSecrets lets an ExpenseApp name its databases by Secrets of its own namespace (a
	// single-team install); otherwise only ClusterDatabases are taken.
	NamespacedSecrets bool
	// StatementTimeout and LockTimeout bound every statement on every database (tenantdb.Options).
	StatementTimeout, LockTimeout time.Duration
	// PerDatabase bounds the reconciles that work on one database at once (Hold), so that a database
	// that hangs holds no more of the operator's workers than that; 0 is no bound.
	PerDatabase int
	// AdminTracer, when set, is told every statement of every admin session (tests check them).
	AdminTracer func(sql string, args []any)

	mu    sync.Mutex
	dbs   map[shardKey]*appDB
	cache map[shardKey]cachedURI
	// places has PerDatabase places for the reconciles at work on a database, by tenantdb.DB.Server.
	places map[string]*dbPlaces
}

// ErrDatabaseBusy says that as many reconciles as Databases.PerDatabase are already at work on a
// database: this one waits its turn without holding a worker.
var ErrDatabaseBusy = errors.New("as many reconciles as the operator allows per database are at work on it")

// Hold's patience: a reconcile waits for a place on a busy database as long as the database gives
// places back (one freed in the last holdWait), up to holdMax; on a database that frees none for holdWait
// (one that hangs) it gives up, and its worker is back for other work.
const (
	holdWait = 200 * time.Millisecond
	holdMax  = 10 * time.Second
)

// dbPlaces are one database's places for reconciles (Databases.PerDatabase of them).
type dbPlaces struct {
	slots    chan struct{}
	lastFree atomic.Int64 // when a place was last given back (UnixNano)
}

// Hold reserves one of the database's PerDatabase places for a reconcile, waiting for one while the
// database gives places back, or returns ErrDatabaseBusy. The returned function gives the place back.
func (d *Databases) Hold(ctx context.Context, db *tenantdb.DB) (func(), error) {
	if d.PerDatabase <= 0 {
		return func() {}, nil
	}
	d.mu.Lock()
	p, ok := d.places[db.Server()]
	if !ok {
		if d.places == nil {
			d.places = map[string]*dbPlaces{}
		}
		p = &dbPlaces{slots: make(chan struct{}, d.PerDatabase)}
		d.places[db.Server()] = p
	}
	d.mu.Unlock()
	giveUp := time.Now().Add(holdMax)
	timer := time.NewTimer(holdWait)
	defer timer.Stop()
	for {
		select {
		case p.slots <- struct{}{}:
			var once sync.Once
			return func() {
				once.Do(func() {
					p.lastFree.Store(time.Now().UnixNano())
					<-p.slots
				})
			}, nil
		case <-timer.C:
			if time.Since(time.Unix(0, p.lastFree.Load())) > holdWait || time.Now().After(giveUp) {
				return nil, ErrDatabaseBusy
			}
			timer.Reset(holdWait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// shardKey names one shard of one ExpenseApp.
type shardKey struct {
	app   types.NamespacedName
	shard string
}

type appDB struct {
	sum [32]byte // of the connection string and pool sizes
	db  *tenantdb.DB
}

// URI reads the admin connection string of an ExpenseApp's shard from its Secret. A missing Secret or
// key is a wait error, with a message that says what to fix.
func (d *Databases) URI(ctx context.Context, app *tenantryv1.ExpenseApp, shard string) (string, error) {
	c, err := d.uris(ctx, app, shard)
	return c.uri, err
}

// uris reads the admin connection string of an ExpenseApp's shard: from the Secret of the
// ClusterDatabase it names, in the operator's namespace, once the declaration allows the app's namespace
// that use; or, on a single-team install, from a Secret of the app's own namespace.
func (d *Databases) uris(ctx context.Context, app *tenantryv1.ExpenseApp, shard string) (cachedURI, error) {
	ref, ok := shardRef(app, shard)
	if !ok {
		return cachedURI{}, stallErr(tenantryv1.ReasonShardNotFound, time.Minute,
			fmt.Errorf("ExpenseApp %s has no shard %q: name one of spec.shards, or %q", app.Name, shard, tenantryv1.HomeShard))
	}
	field := "spec.database"
	if shard != tenantryv1.HomeShard {
		field = fmt.Sprintf("spec.shards[%s]", shard)
	}
	key := shardKey{app: types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, shard: shard}
	// A fleet migration asks once per tenant; a few seconds' memory saves as many API round trips, and a
	// rotated connection string (or a declaration that no longer allows the namespace) is still picked up
	// within secretTTL.
	d.mu.Lock()
	if c, ok := d.cache[key]; ok && time.Since(c.at) < secretTTL && c.ref == ref {
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	var secret types.NamespacedName
	var secretKey, namedBy string
	switch {
	case ref.cluster != "":
		declared, err := d.declared(ctx, app, ref.cluster, shard, field)
		if err != nil {
			return cachedURI{}, err
		}
		secret = types.NamespacedName{Namespace: d.PlatformNamespace, Name: declared.Name}
		secretKey, namedBy = declared.KeyOrDefault(), "ClusterDatabase "+ref.cluster
	case !d.NamespacedSecrets:
		return cachedURI{}, stallErr(tenantryv1.ReasonNotAllowed, time.Minute, fmt.Errorf("ExpenseApp %s names its "+
			"database by a Secret of its own namespace (%s.secretRef), and this operator takes databases only from the "+
			"ClusterDatabases the platform team declares: name one in %s.clusterDatabase (kubectl get clusterdatabases), "+
			"or, on a single-team install, start the operator with --namespaced-database-secrets", app.Name, field, field))
	default:
		secret = types.NamespacedName{Namespace: app.Namespace, Name: ref.secret.Name}
		secretKey, namedBy = ref.secret.KeyOrDefault(), fmt.Sprintf("ExpenseApp %s (%s.secretRef)", app.Name, field)
	}
	c := cachedURI{ref: ref, at: time.Now(), where: fmt.Sprintf("key %q of Secret %s, named by %s", secretKey, secret, namedBy)}
	var s corev1.Secret
	if err := d.Reader.Get(ctx, secret, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return cachedURI{}, waitErr(tenantryv1.ReasonSecretNotFound, 10*time.Second,
				"Secret %s named by %s does not exist", secret, namedBy)
		}
		return cachedURI{}, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading Secret %s: %w", secret, err))
	}
	if c.uri = string(s.Data[secretKey]); c.uri == "" {
		return cachedURI{}, waitErr(tenantryv1.ReasonInvalidSecret, 10*time.Second,
			"Secret %s, named by %s, has no key %q holding the database connection string", secret, namedBy, secretKey)
	}
	d.mu.Lock()
	if d.cache == nil {
		d.cache = map[shardKey]cachedURI{}
	}
	d.cache[key] = c
	d.mu.Unlock()
	return c, nil
}

// declared is the admin Secret of a ClusterDatabase an ExpenseApp names for a shard, once the
// declaration selects the app's namespace and allows the use (Home for the home database, Shard for the
// others). Anything else refuses the app: it names no database the platform let it use.
func (d *Databases) declared(ctx context.Context, app *tenantryv1.ExpenseApp, name, shard, field string) (tenantryv1.SecretKeyRef, error) {
	var cdb tenantryv1.ClusterDatabase
	if err := d.Declarations.Get(ctx, types.NamespacedName{Name: name}, &cdb); err != nil {
		if apierrors.IsNotFound(err) {
			return tenantryv1.SecretKeyRef{}, waitErr(tenantryv1.ReasonDatabaseNotDeclared, 10*time.Second,
				"%s.clusterDatabase names ClusterDatabase %s, which does not exist: the platform team declares the "+
					"databases ExpenseApps may use (kubectl get clusterdatabases)", field, name)
		}
		return tenantryv1.SecretKeyRef{}, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading ClusterDatabase %s: %w", name, err))
	}
	use := tenantryv1.DatabaseUseShard
	if shard == tenantryv1.HomeShard {
		use = tenantryv1.DatabaseUseHome
	}
	if !cdb.Spec.Allows(use) {
		return tenantryv1.SecretKeyRef{}, stallErr(tenantryv1.ReasonNotAllowed, time.Minute, fmt.Errorf("%s.clusterDatabase "+
			"names ClusterDatabase %s, which does not allow the use %s (its spec.uses): name another, or ask the "+
			"platform team to allow it", field, name, use))
	}
	var ns corev1.Namespace
	if err := d.Reader.Get(ctx, types.NamespacedName{Name: app.Namespace}, &ns); err != nil {
		return tenantryv1.SecretKeyRef{}, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading Namespace %s: %w", app.Namespace, err))
	}
	selector, err := metav1.LabelSelectorAsSelector(&cdb.Spec.NamespaceSelector)
	if err != nil || !selector.Matches(labels.Set(ns.Labels)) {
		return tenantryv1.SecretKeyRef{}, stallErr(tenantryv1.ReasonNotAllowed, time.Minute, fmt.Errorf("%s.clusterDatabase "+
			"names ClusterDatabase %s, which does not allow namespace %s (its spec.namespaceSelector does not select "+
			"it): name another, or ask the platform team to allow this namespace", field, name, app.Namespace))
	}
	if d.PlatformNamespace == "" {
		return tenantryv1.SecretKeyRef{}, stallErr(tenantryv1.ReasonSecretNotFound, time.Minute, fmt.Errorf("the operator "+
			"does not know its own namespace, which holds ClusterDatabase %s's Secret: start it with --platform-namespace", name))
	}
	return cdb.Spec.SecretRef, nil
}

// appLoginURIs reads the app's logins from its Secret, by shard.
func appLoginURIs(s *corev1.Secret) map[string]string { return tenantryv1.AppLoginURIs(s.Data) }

// Reread makes the next call read an ExpenseApp's Secrets again: its app Secret was just written.
func (d *Databases) Reread(app types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.cache {
		if k.app == app {
			delete(d.cache, k)
		}
	}
}

// replacedDBGrace is how long a database replaced by a new connection string stays open for the work
// under way on it.
const replacedDBGrace = 30 * time.Second

// secretTTL is how long a database Secret's connection string is reused before it is read again.
const secretTTL = 5 * time.Second

type cachedURI struct {
	ref   dbRef
	uri   string // the admin's
	where string // the Secret's key that holds it, for messages
	at    time.Time
}

// For returns the home database of an ExpenseApp: its registry and routing, and shard "home".
func (d *Databases) For(ctx context.Context, app *tenantryv1.ExpenseApp) (*tenantdb.DB, error) {
	return d.Shard(ctx, app, tenantryv1.HomeShard)
}

// Shard returns the database of one of an ExpenseApp's shards, opened anew when its connection string
// changed. A connection string that does not parse is a stall error.
func (d *Databases) Shard(ctx context.Context, app *tenantryv1.ExpenseApp, shard string) (*tenantdb.DB, error) {
	if shard == "" {
		shard = tenantryv1.HomeShard
	}
	c, err := d.uris(ctx, app, shard)
	if err != nil {
		return nil, err
	}
	// The app's login and the operator's tenant login are named after the home database, on every shard.
	home := c
	if shard != tenantryv1.HomeShard {
		if home, err = d.uris(ctx, app, tenantryv1.HomeShard); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", c.uri, home.uri, app.Spec.Migrations.MaxConcurrent))

	key := shardKey{app: types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, shard: shard}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.dbs[key]; ok {
		if cur.sum == sum {
			return cur.db, nil
		}
		// Work under way on the old connections (a reconcile, a rollout) finishes on them first.
		time.AfterFunc(replacedDBGrace, cur.db.Close)
		delete(d.dbs, key)
	}
	// A connection string that does not parse is a stall error, naming its Secret.
	invalid := func(c cachedURI, shard string, err error) error {
		return stallErr(tenantryv1.ReasonInvalidSecret, time.Minute, fmt.Errorf("%s (shard %s): %v", c.where, shard, err))
	}
	homeName, err := tenantdb.DatabaseName(home.uri)
	if err != nil {
		return nil, invalid(home, tenantryv1.HomeShard, err)
	}
	name, err := tenantdb.DatabaseName(c.uri)
	if err != nil {
		return nil, invalid(c, shard, err)
	}
	// The operator's tenant login is one per database (its password is this DB's): two shards on one
	// server, where roles are shared, must not reset each other's.
	db, err := tenantdb.Open(c.uri, tenantdb.Options{MaxConcurrentMigrations: app.Spec.Migrations.MaxConcurrent,
		AppRole: appRole(homeName, app), Worker: workerRole(name, app), Scratch: scratchRole(name, app),
		StatementTimeout: d.StatementTimeout, LockTimeout: d.LockTimeout, AdminTracer: d.AdminTracer})
	if err != nil {
		return nil, invalid(c, shard, err)
	}
	if d.dbs == nil {
		d.dbs = map[shardKey]*appDB{}
	}
	d.dbs[key] = &appDB{sum: sum, db: db}
	return db, nil
}

// Forget closes the databases of an ExpenseApp that is gone.
func (d *Databases) Forget(name types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, cur := range d.dbs {
		if k.app == name {
			cur.db.Close()
			delete(d.dbs, k)
		}
	}
	for k := range d.cache {
		if k.app == name {
			delete(d.cache, k)
		}
	}
}

// ForgetShard closes one shard's database: the shard left the ExpenseApp.
func (d *Databases) ForgetShard(app types.NamespacedName, shard string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := shardKey{app: app, shard: shard}
	if cur, ok := d.dbs[key]; ok {
		cur.db.Close()
		delete(d.dbs, key)
	}
	delete(d.cache, key)
}

// Close closes every database.
func (d *Databases) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, cur := range d.dbs {
		cur.db.Close()
		delete(d.dbs, k)
	}
}

// Statements is the number of SQL statements sent so far to the databases of an ExpenseApp, all shards
// together, or -1 when none is open. Tests use it to prove that a reconcile did no database work.
func (d *Databases) Statements(app types.NamespacedName) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, open := int64(0), false
	for k, cur := range d.dbs {
		if k.app == app {
			n += cur.db.Statements()
			open = true
		}
	}
	if !open {
		return -1
	}
	return n
}
