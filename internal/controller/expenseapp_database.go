package controller

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// deviceKeyKey is the key of the app's Secret that holds the key every replica signs its device
// cookies with (the app's DEVICE_KEY): a browser that signed in to an account is not slowed down by
// failed sign-ins of others at it.
const deviceKeyKey = "device-key"

// channelKey is the key of the app's Secret that names the channel on which the app hears of changes
// to its tenants (the app's NOTIFY_CHANNEL; tenantry.app_channels in every registry).
const channelKey = "notify-channel"

// appSecretName is the Secret holding the app's own connection string.
func appSecretName(app *tenantryv1.ExpenseApp) string { return app.AppSecretName() }

// reconcileDatabase gives the app a login role of its own and a Secret with its connection string, so the
// admin connection string never reaches the app's pods. The Secret's connection string follows the
// admin one (the same server, port and database; the app's own user and password). It sends SQL only
// when the Secret is new or out of date, or the spec changed. It returns the Secret as it now is.
func (r *ExpenseAppReconciler) reconcileDatabase(ctx context.Context, run *appRun) error {
	var err error
	run.secret, err = r.ensureAppLogin(ctx, run.app, run.tenants)
	return err
}

// ensureAppLogin is reconcileDatabase's work; it returns the Secret as it now is. The login has the
// same name and password on every shard, and a connection string for each: key "uri" for the home
// database, key "shards" for the others (a JSON object of shard name to connection string).
func (r *ExpenseAppReconciler) ensureAppLogin(ctx context.Context, app *tenantryv1.ExpenseApp,
	tenants []tenantryv1.Tenant) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: appSecretName(app)}, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading Secret %s: %w", appSecretName(app), err))
	}
	exists := err == nil
	fail := func(err error) (*corev1.Secret, error) {
		se := asStepError(err, tenantryv1.ReasonDatabaseError)
		setAppCondition(app, tenantryv1.ConditionDatabaseReady, metav1.ConditionFalse, se.reason, se.Error())
		return nil, err
	}
	home, err := r.Databases.For(ctx, app)
	if err != nil {
		return fail(err)
	}
	role := appRole(home.Database(), app)
	pass := string(secret.Data["password"])
	if pass == "" {
		pass = password.Generate(32)
	}
	shards := appShards(app, tenants)
	want := make(map[string]string, len(shards))
	for _, shard := range shards {
		adminURI, err := r.Databases.URI(ctx, app, shard)
		if err != nil {
			return fail(err)
		}
		if want[shard], err = withUser(adminURI, role.Name, pass); err != nil {
			return fail(stallErr(tenantryv1.ReasonInvalidDatabase, time.Minute, fmt.Errorf("shard %s: %w", shard, err)))
		}
	}
	// Only the connection strings (servers, databases, login name) decide the login: another change of
	// the spec (replicas, maxConcurrent) must not re-grant thousands of tenants.
	have := appLoginURIs(secret)
	ready := exists && meta.IsStatusConditionTrue(app.Status.Conditions, tenantryv1.ConditionDatabaseReady)
	channel := string(secret.Data[channelKey])
	if !registry.ValidChannel(channel) {
		channel = "" // not one the operator made: the namespace may edit its Secret
	}
	if ready && maps.Equal(have, want) && len(secret.Data[deviceKeyKey]) > 0 && channel != "" {
		return secret, nil
	}
	// A Secret without a channel yet (new, or from before channels) gets one, recorded on every shard.
	recorded := channel != ""
	if !recorded {
		channel = newChannel()
	}
	if app.Status.Citus, err = home.Citus(ctx); err != nil {
		return fail(retryErr(tenantryv1.ReasonDatabaseError, err))
	}
	placed := tenantsByShard(tenants)
	for _, shard := range shards {
		if ready && have[shard] == want[shard] && recorded {
			continue
		}
		if err := r.ensureLoginOn(ctx, app, shard, role, pass, channel, placed[shard]); err != nil {
			return fail(err)
		}
	}
	others := maps.Clone(want)
	delete(others, tenantryv1.HomeShard)
	shardURIs, err := json.Marshal(others)
	if err != nil {
		return fail(err)
	}
	secret.ObjectMeta = metav1.ObjectMeta{Name: appSecretName(app), Namespace: app.Namespace,
		ResourceVersion: secret.ResourceVersion, Labels: map[string]string{LabelManagedBy: ManagedBy}}
	deviceKey := secret.Data[deviceKeyKey]
	if len(deviceKey) == 0 {
		deviceKey = []byte(password.Generate(43)) // about 250 random bits
	}
	secret.Data = map[string][]byte{tenantryv1.AppSecretURIKey: []byte(want[tenantryv1.HomeShard]), tenantryv1.AppSecretShardsKey: shardURIs,
		"username": []byte(role.Name), "password": []byte(pass), deviceKeyKey: deviceKey, channelKey: []byte(channel)}
	if err := controllerutil.SetControllerReference(app, secret, r.Scheme); err != nil {
		return fail(err)
	}
	if exists {
		err = r.Update(ctx, secret)
	} else {
		err = r.Create(ctx, secret)
	}
	if err != nil {
		return fail(retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing Secret %s: %w", secret.Name, err)))
	}
	waitForCache(ctx, r.Client, secret)
	r.Databases.Reread(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	msg := fmt.Sprintf("The app logs in as %q (Secret %s)", role.Name, secret.Name)
	if len(shards) > 1 {
		msg += fmt.Sprintf(" on %d shards", len(shards))
	}
	setAppCondition(app, tenantryv1.ConditionDatabaseReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded, msg)
	return secret, nil
}

// ensureLoginOn creates or updates the app's login on one shard, records its announcement channel there,
// and lets it act as the tenants placed there (names): what a new or renamed login needs for the
// tenants it serves.
func (r *ExpenseAppReconciler) ensureLoginOn(ctx context.Context, app *tenantryv1.ExpenseApp, shard string,
	role tenantdb.Role, pass, channel string, names []string) error {
	db, err := r.Databases.Shard(ctx, app, shard)
	if err != nil {
		return err
	}
	var ownership *tenantdb.OwnershipError
	if err := db.EnsureAppRole(ctx, role, pass); errors.As(err, &ownership) {
		return stallErr(tenantryv1.ReasonRoleConflict, 5*time.Minute,
			fmt.Errorf("shard %s: %w: give the ExpenseApp another name, or point it at another database", shard, err))
	} else if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
	}
	if err := db.SetAppChannel(ctx, app.Namespace, app.Name, channel); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
	}
	if err := db.GrantTenants(ctx, app.Namespace, names, role.Name); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
	}
	return nil
}

// newChannel is a new announcement channel for an app: registry.ChannelPrefix and 128 random bits.
func newChannel() string {
	buf := make([]byte, registry.ChannelBytes)
	_, _ = rand.Read(buf)
	return registry.ChannelPrefix + hex.EncodeToString(buf)
}

// SecretHash is a short hash of a Secret's data, for a pod template annotation.
func SecretHash(s *corev1.Secret) string {
	h := sha256.New()
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", k, len(s.Data[k])) // a hash's Write never fails
		h.Write(s.Data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// appRole is the app's login role of an ExpenseApp: its name derived from the ExpenseApp's identity,
// and the mark that says it is this ExpenseApp's.
// database is the home database's name: the same login serves every shard.
func appRole(database string, app *tenantryv1.ExpenseApp) tenantdb.Role {
	return tenantdb.Role{Name: registry.AppRoleName(database, app.Namespace, app.Name),
		Mark: tenantdb.OwnerMark("app", database, app.Namespace, app.Name)}
}

// workerRole is the operator's own login for the tenant sessions of an ExpenseApp's tenants on one of
// its databases (named after it).
func workerRole(database string, app *tenantryv1.ExpenseApp) tenantdb.Role {
	return tenantdb.Role{Name: registry.WorkerRoleName(database, app.Namespace, app.Name),
		Mark: tenantdb.OwnerMark("operator", database, app.Namespace, app.Name)}
}

// scratchRole is the role, and schema, in which the operator reads the shape of a release's migrations
// for an ExpenseApp on one of its databases (tenantdb.DB.ReleaseShape).
func scratchRole(database string, app *tenantryv1.ExpenseApp) tenantdb.Role {
	return tenantdb.Role{Name: registry.ShapeName(database, app.Namespace, app.Name),
		Mark: tenantdb.OwnerMark("shape", database, app.Namespace, app.Name)}
}

// withUser returns a postgres:// URL with its user and password replaced. Credentials given as query
// parameters are dropped too: the admin's must never reach the app's Secret.
func withUser(uri, user, pass string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("the database connection string must be a postgres:// URL to derive the app's login from it")
	}
	q := u.Query()
	for key := range q {
		switch strings.ToLower(key) {
		case "user", "password", "passfile", "sslpassword":
			q.Del(key)
		}
	}
	u.RawQuery = q.Encode()
	u.User = url.UserPassword(user, pass)
	return u.String(), nil
}
