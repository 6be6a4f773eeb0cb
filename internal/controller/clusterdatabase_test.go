package controller

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// The databases a namespace may use are the ones the platform team declared for it, and nothing a user
// of the namespace writes widens that. A user with every right in namespace "other" (and none beyond)
// tries, in turn: to use the database declared for another namespace; to name a database by a Secret of
// their own (pointing at a listener that counts connections: the operator never dials it); to use a
// shard-only declaration as a home; to declare a database, change a declaration, or read the
// platform's Secrets. Each is refused: Stalled with NotAllowed and a message saying what to do, or
// Forbidden by the API server; and no login is made on the victim's database. Then the platform
// revokes the victim namespace's declaration: its app stalls at once, its tenant's data stays, and it
// is served again once the platform allows it anew.
func TestClusterDatabase_onlyWhatThePlatformDeclared(t *testing.T) {
	f, other := newFixture(t), newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("acme", "acme-cdb.example.com")))
	f.waitReady("acme")
	mallory := namespaceAdmin(t, other.ns)

	// A listener that stands for any server of the attacker's choosing.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer lis.Close()
	var dialed atomic.Int64
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	must(t, mallory.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: other.ns},
		StringData: map[string]string{"uri": fmt.Sprintf("postgres://x:y@%s/victim", lis.Addr())}}))

	// The platform declares a shard-only database for "other".
	other.declare("shard-only", f.url)
	cdb := &tenantryv1.ClusterDatabase{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: other.declared("shard-only")}, cdb))
	cdb.Spec.Uses = []tenantryv1.DatabaseUse{tenantryv1.DatabaseUseShard}
	must(t, k8s.Update(ctx, cdb))

	tries := []struct {
		app  string
		db   tenantryv1.DatabaseSpec
		want string
	}{
		{"borrow", tenantryv1.DatabaseSpec{ClusterDatabase: f.declared("db")}, "which does not allow namespace " + other.ns},
		{"own-secret", tenantryv1.DatabaseSpec{SecretRef: &tenantryv1.SecretKeyRef{Name: "mine"}}, "--namespaced-database-secrets"},
		{"shard-as-home", tenantryv1.DatabaseSpec{ClusterDatabase: other.declared("shard-only")}, "which does not allow the use Home"},
	}
	for _, try := range tries {
		must(t, mallory.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: try.app, Namespace: other.ns},
			Spec: tenantryv1.ExpenseAppSpec{Image: "tenantry:test", Database: try.db}}))
	}
	// A shard, or a move target, is no different: the database declared for f's namespace as a shard of
	// an app of "other" on its own declared home.
	must(t, mallory.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "borrow-shard", Namespace: other.ns},
		Spec: tenantryv1.ExpenseAppSpec{Image: "tenantry:test", Database: tenantryv1.DatabaseSpec{ClusterDatabase: other.declared("db")},
			Shards: []tenantryv1.ShardSpec{{Name: "east", ClusterDatabase: f.declared("db")}}}}))
	tries = append(tries, struct {
		app  string
		db   tenantryv1.DatabaseSpec
		want string
	}{"borrow-shard", tenantryv1.DatabaseSpec{}, "spec.shards[east].clusterDatabase names ClusterDatabase " + f.declared("db") +
		", which does not allow namespace " + other.ns})
	for _, try := range tries {
		app := &tenantryv1.ExpenseApp{}
		if err := eventually(20*time.Second, func() error {
			must(t, k8s.Get(ctx, client.ObjectKey{Namespace: other.ns, Name: try.app}, app))
			c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionStalled)
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != tenantryv1.ReasonNotAllowed {
				return fmt.Errorf("not Stalled with NotAllowed: %+v", app.Status.Conditions)
			}
			if !strings.Contains(c.Message, try.want) {
				return fmt.Errorf("message %q does not say %q", c.Message, try.want)
			}
			return nil
		}); err != nil {
			t.Errorf("ExpenseApp %s: %v", try.app, err)
		}
		if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1`, appRole(f.database, app).Name); n != 0 {
			t.Errorf("ExpenseApp %s got a login on the database it was refused", try.app)
		}
	}
	// Nor did any of them, shards included, get a login's grants or a channel on f's database.
	if n := f.count(`SELECT count(*) FROM tenantry.app_channels WHERE namespace = $1`, other.ns); n != 0 {
		t.Errorf("ExpenseApps of %s were recorded on the database they were refused (%d channel(s))", other.ns, n)
	}
	if n := dialed.Load(); n > 0 {
		t.Errorf("the operator dialed the server a namespace's own Secret names %d time(s)", n)
	}

	// Declarations and their Secrets are the platform's.
	victim := &tenantryv1.ClusterDatabase{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: f.declared("db")}, victim))
	widened := victim.DeepCopy()
	widened.Spec.NamespaceSelector = metav1.LabelSelector{}
	for what, err := range map[string]error{
		"declare a database": mallory.Create(ctx, &tenantryv1.ClusterDatabase{ObjectMeta: metav1.ObjectMeta{Name: other.ns + "-own"},
			Spec: tenantryv1.ClusterDatabaseSpec{SecretRef: tenantryv1.SecretKeyRef{Name: "mine"}}}),
		"widen another namespace's declaration": mallory.Update(ctx, widened),
		"list the declarations":                 mallory.List(ctx, &tenantryv1.ClusterDatabaseList{}),
		"read the platform's database Secret": mallory.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: victim.Spec.SecretRef.Name},
			&corev1.Secret{}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("a user with every right in namespace %s may %s: %v", other.ns, what, err)
		}
	}

	// The platform revokes f's namespace: its app stops at once, and its tenant's data stays.
	f.stallExpected = true
	selectNone := victim.DeepCopy()
	selectNone.Spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "nobody"}}
	must(t, k8s.Update(ctx, selectNone))
	f.waitApp("Stalled with NotAllowed after the revocation", func(a *tenantryv1.ExpenseApp) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionStalled)
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == tenantryv1.ReasonNotAllowed
	})
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("acme")); n != 1 {
		t.Fatalf("the revoked namespace's tenant schema is gone")
	}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: f.declared("db")}, selectNone))
	selectNone.Spec.NamespaceSelector = victim.Spec.NamespaceSelector
	must(t, k8s.Update(ctx, selectNone))
	f.waitApp("served again", func(a *tenantryv1.ExpenseApp) bool {
		return !meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionStalled) &&
			meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionDatabaseReady)
	})
	f.stallExpected = false
}

// On a single-team install (--namespaced-database-secrets) an ExpenseApp may name its database by a
// Secret of its own namespace; otherwise that Secret is never read.
func TestDatabases_namespacedSecrets(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: f.ns},
		StringData: map[string]string{"uri": f.url}}))
	app := &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "single", Namespace: f.ns},
		Spec: tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{SecretRef: &tenantryv1.SecretKeyRef{Name: "db"}}}}
	single := &Databases{Reader: k8s, Declarations: k8s, PlatformNamespace: platformNS, NamespacedSecrets: true}
	if uri, err := single.URI(ctx, app, tenantryv1.HomeShard); err != nil || uri != f.url {
		t.Fatalf("single-team install: %q, %v; want the namespace's Secret", uri, err)
	}
	shared := &Databases{Reader: k8s, Declarations: k8s, PlatformNamespace: platformNS}
	_, err := shared.URI(ctx, app, tenantryv1.HomeShard)
	if se := asStepError(err, ""); err == nil || se.reason != tenantryv1.ReasonNotAllowed {
		t.Fatalf("without --namespaced-database-secrets: %v, want NotAllowed", err)
	}
}
