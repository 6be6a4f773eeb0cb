package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/backup"
	"tenantry.dev/tenantry/test/utils/objectstore"
	"tenantry.dev/tenantry/test/utils/tenantdata"
)

// objectStores is the suite's one SeaweedFS, started by the first test that needs it; each fixture
// gets a bucket of its own.
var objectStores struct {
	once    sync.Once
	server  *objectstore.Server
	err     error
	buckets int
	mu      sync.Mutex
}

func stopObjectStore() {
	if objectStores.server != nil {
		objectStores.server.Stop()
	}
}

// withObjectStore starts the suite's object store if it is not yet, gives the fixture a bucket and a
// credentials Secret, and points its ExpenseApp's spec.backup there. It returns the server and bucket.
func (f *fixture) withObjectStore() (*objectstore.Server, string) {
	f.t.Helper()
	objectStores.once.Do(func() { objectStores.server, objectStores.err = objectstore.Start() })
	if objectStores.err != nil {
		f.t.Fatalf("starting the object store: %v", objectStores.err)
	}
	s := objectStores.server
	objectStores.mu.Lock()
	objectStores.buckets++
	bucket := fmt.Sprintf("backups-%d", objectStores.buckets)
	objectStores.mu.Unlock()
	ctx := context.Background()
	must(f.t, s.MakeBucket(ctx, bucket))
	must(f.t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "s3"},
		Data: map[string][]byte{tenantryv1.ObjectStoreAccessKeyID: []byte(s.AccessKeyID),
			tenantryv1.ObjectStoreSecretAccessKey: []byte(s.SecretAccessKey)}}))
	app := &tenantryv1.ExpenseApp{}
	must(f.t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, app))
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Backup = &tenantryv1.AppBackupSpec{ObjectStore: tenantryv1.ObjectStore{
		DestinationPath: "s3://" + bucket + "/tenantry", EndpointURL: s.Endpoint, ForcePathStyle: true,
		Credentials: tenantryv1.LocalSecretRef{SecretName: "s3"}}}
	must(f.t, k8s.Patch(ctx, app, patch))
	return s, bucket
}

// backUp creates a Backup of a tenant and waits until it is Completed.
func (f *fixture) backUp(name, tenant string) *tenantryv1.Backup {
	f.t.Helper()
	must(f.t, k8s.Create(context.Background(), &tenantryv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: tenantryv1.BackupSpec{Tenant: tenantryv1.LocalRef{Name: tenant}}}))
	return f.waitBackup(name, tenantryv1.BackupCompleted)
}

// waitBackup waits until a Backup reaches a phase.
func (f *fixture) waitBackup(name string, phase tenantryv1.BackupPhase) *tenantryv1.Backup {
	f.t.Helper()
	b := &tenantryv1.Backup{}
	err := eventually(60*time.Second, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, b); err != nil {
			return err
		}
		if b.Status.Phase != phase {
			return fmt.Errorf("phase %q, error %q, conditions %+v", b.Status.Phase, b.Status.Error, b.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("Backup %s: waiting for %s: %v", name, phase, err)
	}
	return b
}

// restoreFrom creates a Tenant whose data comes from a Backup.
func (f *fixture) restoreFrom(name, backupName string) {
	f.t.Helper()
	tn := f.tenant(name, name+"."+f.ns+".backup.test")
	tn.Spec.Source = &tenantryv1.TenantSource{Backup: &tenantryv1.LocalRef{Name: backupName}}
	must(f.t, k8s.Create(context.Background(), tn))
}

// bigTenant onboards a tenant with a row in every table and enough expenses that copying it takes
// seconds, not milliseconds: long enough to stop its object store in the middle.
func (f *fixture) bigTenant(name string) {
	f.t.Helper()
	ctx := context.Background()
	must(f.t, k8s.Create(ctx, f.tenant(name, name+"."+f.ns+".backup.test")))
	f.waitReady(name)
	must(f.t, tenantdata.Fill(ctx, f.db, f.schema(name)))
	q := f.q(name)
	_, err := f.db.Exec(ctx, `INSERT INTO `+q+`.expenses (budget_id, spent_on, description, amount_minor, created_by)
SELECT (SELECT min(id) FROM `+q+`.budgets), current_date, 'seed ' || g, 100, (SELECT min(id) FROM `+q+`.users)
FROM generate_series(1, 400000) g`)
	must(f.t, err)
}

// sameRows fails unless every table of the restored tenant holds exactly the rows of the original, but
// its users, which hold one more: the restored tenant's own first admin; and its sessions and API
// tokens, which a restore into a new tenant never brings.
func (f *fixture) sameRows(original, restored string, columns map[string][]string) {
	f.t.Helper()
	ctx := context.Background()
	for _, table := range tenantdata.Tables {
		if slices.Contains(migrations.CredentialTables, table) {
			if n := f.count(`SELECT count(*) FROM ` + f.q(restored) + `.` + table); n != 0 {
				f.t.Errorf("the restored tenant's %s holds %d rows: a session or token of one tenant opens another", table, n)
			}
			continue
		}
		want, err := tenantdata.Dump(ctx, f.db, f.schema(original), table, columns[table]...)
		must(f.t, err)
		got, err := tenantdata.Dump(ctx, f.db, f.schema(restored), table, columns[table]...)
		must(f.t, err)
		if table == "users" {
			admin := slices.IndexFunc(got, func(r string) bool { return strings.Contains(r, "finance@"+restored+".example.com") })
			if admin < 0 {
				f.t.Errorf("the restored tenant has no first admin of its own: %q", got)
				continue
			}
			got = slices.Delete(got, admin, admin+1)
		}
		if len(want) == 0 || !slices.Equal(want, got) {
			f.t.Errorf("table %s: %d rows in %s, %d restored in %s, or they differ:\n%q\n%q", table, len(want), original, len(got), restored, want, got)
		}
	}
}

// A tenant with rows in every table is backed up; the Backup records what it wrote, its manifest says
// who and what it holds, and a new Tenant restored from it holds every row of every table (and its
// own first admin). Deleting the Backup removes its files from the store.
func TestBackup_restoreIntoNewTenant(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	server, bucket := f.withObjectStore()
	must(t, k8s.Create(ctx, f.tenant("origin", "origin."+f.ns+".backup.test")))
	f.waitReady("origin")
	must(t, tenantdata.Fill(ctx, f.db, f.schema("origin")))

	b := f.backUp("nightly", "origin")
	dir := backup.Dir(f.ns, "origin", "nightly", string(b.UID))
	origin := f.get("origin")
	if b.Status.Rows != tenantdata.Rows+1 || b.Status.Tables != int32(len(tenantdata.Tables)) || b.Status.Size <= 0 ||
		b.Status.SchemaVersion != migrations.Latest || b.Status.TenantUID != string(origin.UID) ||
		b.Status.DestinationPath != "s3://"+bucket+"/tenantry/"+dir || b.Status.Duration == nil {
		t.Fatalf("Backup status %+v; want %d rows (the fill and the first admin) in %d tables", b.Status, tenantdata.Rows+1, len(tenantdata.Tables))
	}
	if !meta.IsStatusConditionTrue(b.Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatalf("a Completed Backup is not Ready: %+v", b.Status.Conditions)
	}
	keys, err := server.Keys(ctx, bucket, "tenantry/"+dir)
	must(t, err)
	if len(keys) != len(tenantdata.Tables)+1 || !slices.Contains(keys, "tenantry/"+dir+backup.ManifestName) {
		t.Fatalf("the store holds %q under the backup's directory; want the manifest and one object per table", keys)
	}
	m := readManifest(t, server, bucket, "tenantry/"+dir+backup.ManifestName)
	if m.Tenant.Namespace != f.ns || m.Tenant.Name != "origin" || m.Tenant.UID != string(origin.UID) || m.Tenant.Schema != f.schema("origin") ||
		m.Backup.UID != string(b.UID) || m.SchemaVersion != migrations.Latest || m.Release.SchemaVersion != migrations.Latest ||
		m.Rows() != b.Status.Rows || len(m.Sequences) == 0 {
		t.Fatalf("manifest %+v", m)
	}
	for _, tb := range m.Tables {
		if len(tb.SHA256) != 64 || tb.Bytes <= 0 || tb.StoredBytes <= 0 {
			t.Fatalf("manifest entry %+v", tb)
		}
	}

	f.restoreFrom("copy", "nightly")
	restored := f.waitReady("copy")
	if c := meta.FindStatusCondition(restored.Status.Conditions, tenantryv1.ConditionSourceCopied); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, fmt.Sprintf("%d rows in %d tables", tenantdata.Rows+1-2, len(tenantdata.Tables))) { // but its session and token
		t.Fatalf("Restored condition %+v", c)
	}
	if restored.Status.SchemaVersion != migrations.Latest {
		t.Fatalf("restored tenant at version %d", restored.Status.SchemaVersion)
	}
	f.sameRows("origin", "copy", nil)

	// source is set once, at creation.
	tn := f.get("copy")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Source = nil
	if err := k8s.Patch(ctx, tn, patch); err == nil || !strings.Contains(err.Error(), "source is set when a Tenant is created, or never") {
		t.Fatalf("removing spec.source: %v", err)
	}

	must(t, k8s.Delete(ctx, b))
	must(t, eventually(30*time.Second, func() error {
		keys, err := server.Keys(ctx, bucket, "tenantry/"+dir)
		if err != nil || len(keys) > 0 {
			return fmt.Errorf("the store still holds %q (%v)", keys, err)
		}
		return nil
	}))
}

func readManifest(t *testing.T, server *objectstore.Server, bucket, key string) backup.Manifest {
	t.Helper()
	client, err := server.Client()
	must(t, err)
	obj, err := client.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	must(t, err)
	defer func() { _ = obj.Close() }()
	data, err := io.ReadAll(obj)
	must(t, err)
	var m backup.Manifest
	must(t, json.Unmarshal(data, &m))
	return m
}

// The object store goes away while a restore is filling the new tenant's schema: the restore fails and
// keeps nothing (every table of the schema is empty), and the tenant is not Ready. Once the store is
// back, the restore is tried again and completes with every row.
func TestBackup_restoreFailsHalfway(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	server, _ := f.withObjectStore()
	f.bigTenant("big")
	f.backUp("big-backup", "big")

	f.restoreFrom("big-copy", "big-backup")
	must(t, eventually(60*time.Second, func() error {
		tn := &tenantryv1.Tenant{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "big-copy"}, tn); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSourceCopied); c != nil && c.Reason == tenantryv1.ReasonProgressing {
			return nil
		}
		return errNotYet
	}))
	server.Kill()
	restarted := false
	defer func() {
		if !restarted {
			_ = server.Restart()
		}
	}()
	var failed *metav1.Condition
	var tn *tenantryv1.Tenant
	must(t, eventually(120*time.Second, func() error {
		tn = f.get("big-copy")
		if failed = meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSourceCopied); !strings.Contains(failed.Message, "failed") {
			return errNotYet
		}
		return nil
	}))
	if failed.Status != metav1.ConditionFalse {
		t.Fatalf("with the store gone mid-restore: SourceCopied %+v", failed)
	}
	t.Logf("with the store gone mid-restore: %s: %s", failed.Reason, failed.Message)
	for _, table := range tenantdata.Tables {
		if n := f.count(`SELECT count(*) FROM ` + f.q("big-copy") + `.` + table); n != 0 {
			t.Errorf("after the failed restore, table %s holds %d rows", table, n)
		}
	}
	if meta.IsStatusConditionTrue(tn.Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatal("a tenant whose restore failed is Ready")
	}

	must(t, server.Restart())
	restarted = true
	if err := eventually(120*time.Second, func() error {
		if !meta.IsStatusConditionTrue(f.get("big-copy").Status.Conditions, tenantryv1.ConditionReady) {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("the restore did not complete once the store was back: %+v", f.get("big-copy").Status.Conditions)
	}
	f.sameRows("big", "big-copy", nil)
}

// A backup taken at the release's schema version restores after a release that adds a migration: the
// schema is made at the backup's version, filled, then migrated to the new release's version, and
// holds every row in the columns the backup had.
func TestBackup_restoredAfterARelease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.withObjectStore()
	must(t, k8s.Create(ctx, f.tenant("before", "before."+f.ns+".backup.test")))
	f.waitReady("before")
	must(t, tenantdata.Fill(ctx, f.db, f.schema("before")))
	b := f.backUp("at-latest", "before")
	if b.Status.SchemaVersion != migrations.Latest {
		t.Fatalf("backup at version %d", b.Status.SchemaVersion)
	}

	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nALTER TABLE expenses ADD COLUMN receipt_url text NOT NULL DEFAULT 'none';\n")))
	f.restoreFrom("after", "at-latest")
	if err := eventually(60*time.Second, func() error {
		tn := f.get("after")
		if !meta.IsStatusConditionTrue(tn.Status.Conditions, tenantryv1.ConditionReady) || tn.Status.SchemaVersion != migrations.Latest+1 {
			return fmt.Errorf("version %d, %+v", tn.Status.SchemaVersion, tn.Status.Conditions)
		}
		return nil
	}); err != nil {
		t.Fatalf("the restore after a release: %v", err)
	}
	m := readBackupManifest(t, b)
	columns := map[string][]string{}
	for _, tb := range m.Tables {
		columns[tb.Name] = tb.Columns
	}
	f.sameRows("before", "after", columns)
	if n := f.count(`SELECT count(*) FROM ` + f.q("after") + `.expenses WHERE receipt_url = 'none'`); n != 500 {
		t.Fatalf("the new release's migration ran over %d restored expenses, want 500", n)
	}
}

// readBackupManifest reads a Backup's manifest from the fixture's store.
func readBackupManifest(t *testing.T, b *tenantryv1.Backup) backup.Manifest {
	t.Helper()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(b.Status.DestinationPath, "s3://"), "/")
	return readManifest(t, objectStores.server, bucket, key+backup.ManifestName)
}

// A clone of a live tenant that is being written to, two tables in each transaction, is one snapshot:
// both tables hold the same writes in the clone, and every row of the tables it copies is the source's
// at that moment. Its people are not copied (it has its own first admin alone), nor the expenses that
// refer to them.
func TestClone_consistentUnderWrites(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("template", "template."+f.ns+".clone.test")))
	f.waitReady("template")
	must(t, tenantdata.Fill(ctx, f.db, f.schema("template")))

	// The writer adds a department and a funding account of the same number in each transaction.
	stop := make(chan struct{})
	written := make(chan int)
	go func() {
		n := 0
		defer func() { written <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n++
			if _, err := f.db.Exec(ctx, fmt.Sprintf(`BEGIN; INSERT INTO %[1]s.departments (name) VALUES ('w%[2]d');
INSERT INTO %[1]s.funding_accounts (name, total_minor) VALUES ('w%[2]d', %[2]d); COMMIT`, f.q("template"), n)); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	clone := f.tenant("clone", "clone."+f.ns+".clone.test")
	clone.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "template"}}
	must(t, k8s.Create(ctx, clone))
	f.waitReady("clone")
	close(stop)
	if n := <-written; n < 10 {
		t.Fatalf("the writer wrote %d transactions; the test proves nothing", n)
	}
	c := meta.FindStatusCondition(f.get("clone").Status.Conditions, tenantryv1.ConditionSourceCopied)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "of budgets, departments, funding_accounts") {
		t.Fatalf("SourceCopied %+v", c)
	}
	depts, err := tenantdata.Dump(ctx, f.db, f.schema("clone"), "departments", "name")
	must(t, err)
	accounts, err := tenantdata.Dump(ctx, f.db, f.schema("clone"), "funding_accounts", "name")
	must(t, err)
	writes := func(rows []string) []string {
		var out []string
		for _, r := range rows {
			if strings.HasPrefix(r, "w") {
				out = append(out, r)
			}
		}
		return out
	}
	if d, a := writes(depts), writes(accounts); len(d) == 0 || !slices.Equal(d, a) {
		t.Fatalf("the clone holds %d written departments and %d written accounts: not one snapshot", len(d), len(a))
	}
	// Every copied row is the source's (the source has more now, written after the snapshot).
	for _, table := range []string{"budgets", "departments", "funding_accounts"} {
		src, err := tenantdata.Dump(ctx, f.db, f.schema("template"), table)
		must(t, err)
		got, err := tenantdata.Dump(ctx, f.db, f.schema("clone"), table)
		must(t, err)
		for _, row := range got {
			if !slices.Contains(src, row) {
				t.Errorf("table %s of the clone holds %s, which the source never had", table, row)
			}
		}
		if len(got) == 0 {
			t.Errorf("table %s of the clone is empty", table)
		}
	}
	for table, want := range map[string]int{"users": 1, "sessions": 0, "api_tokens": 0, "expenses": 0} {
		if n := f.count(`SELECT count(*) FROM ` + f.q("clone") + `.` + table); n != want {
			t.Errorf("the clone's %s holds %d rows, want %d", table, n, want)
		}
	}
	// A new department in the clone takes the next id after the copied ones.
	var maxID, newID int64
	must(t, f.db.QueryRow(ctx, `SELECT max(id) FROM `+f.q("clone")+`.departments`).Scan(&maxID))
	must(t, f.db.QueryRow(ctx, `INSERT INTO `+f.q("clone")+`.departments (name) VALUES ('after') RETURNING id`).Scan(&newID))
	if newID <= maxID {
		t.Fatalf("a new department of the clone got id %d, at or below the copied %d", newID, maxID)
	}
}

// A schema-only clone holds the release's schema and its own first admin, and no row of the source; a
// clone that asks for a table that refers to people stalls, saying why.
func TestClone_schemaOnlyAndRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("template", "template."+f.ns+".clone.test")))
	f.waitReady("template")
	must(t, tenantdata.Fill(ctx, f.db, f.schema("template")))

	empty := f.tenant("empty", "empty."+f.ns+".clone.test")
	empty.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "template", SchemaOnly: true}}
	must(t, k8s.Create(ctx, empty))
	if got := f.waitReady("empty"); got.Status.SchemaVersion != migrations.Latest {
		t.Fatalf("schema-only clone at version %d", got.Status.SchemaVersion)
	}
	for _, table := range tenantdata.Tables {
		want := 0
		if table == "users" {
			want = 1
		}
		if n := f.count(`SELECT count(*) FROM ` + f.q("empty") + `.` + table); n != want {
			t.Errorf("the schema-only clone's %s holds %d rows, want %d", table, n, want)
		}
	}

	refused := f.tenant("refused", "refused."+f.ns+".clone.test")
	refused.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "template", Tables: []string{"departments", "expenses"}}}
	must(t, k8s.Create(ctx, refused))
	c := f.waitCondition("refused", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonSourceFailed)
	msg := meta.FindStatusCondition(c.Status.Conditions, tenantryv1.ConditionStalled).Message
	if !strings.Contains(msg, "expenses refers to") || !strings.Contains(msg, "which a clone never copies") {
		t.Fatalf("stall message %q", msg)
	}
	if n := f.count(`SELECT count(*) FROM pg_tables WHERE schemaname = $1`, f.schema("refused")); n != 0 {
		t.Errorf("the refused clone's schema holds %d tables", n)
	}
}

// A schedule of one tenant every two seconds keeping the last two: backups keep coming, and only the
// newest two completed ones stay, with their files; the others are gone from the store. A schedule of
// the app backs up its tenants that have no schedule of their own, and its keep.for deletes each of its
// backups (and files) once that time has passed.
func TestScheduledBackup_keepsWhatItShould(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	server, bucket := f.withObjectStore()
	for _, name := range []string{"daily", "other"} {
		must(t, k8s.Create(ctx, f.tenant(name, name+"."+f.ns+".backup.test")))
		f.waitReady(name)
	}
	two := int32(2)
	must(t, k8s.Create(ctx, &tenantryv1.ScheduledBackup{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "often"},
		Spec: tenantryv1.ScheduledBackupSpec{Schedule: "*/2 * * * * *", Tenant: &tenantryv1.LocalRef{Name: "daily"},
			Keep: tenantryv1.BackupRetention{Last: &two}, Immediate: true}}))
	must(t, k8s.Create(ctx, &tenantryv1.ScheduledBackup{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "app-wide"},
		Spec: tenantryv1.ScheduledBackupSpec{Schedule: "*/3 * * * * *", App: &tenantryv1.LocalRef{Name: "expenses"},
			Keep: tenantryv1.BackupRetention{For: &metav1.Duration{Duration: 2 * time.Second}}}}))
	list := func(schedule string) []tenantryv1.Backup {
		var l tenantryv1.BackupList
		must(t, k8s.List(ctx, &l, client.InNamespace(f.ns), client.MatchingLabels{tenantryv1.LabelScheduledBackup: schedule}))
		return l.Items
	}
	seen := map[string]bool{}
	seenApp := map[string]bool{}
	must(t, eventually(60*time.Second, func() error {
		items := list("often")
		completed := 0
		for _, b := range items {
			seen[b.Name] = true
			if b.Status.Phase == tenantryv1.BackupCompleted && b.DeletionTimestamp.IsZero() {
				completed++
			}
		}
		for _, b := range list("app-wide") {
			seenApp[b.Name] = true
			if b.Spec.Tenant.Name != "other" {
				t.Errorf("the app's schedule backed up %s, which has a schedule of its own", b.Spec.Tenant.Name)
			}
		}
		if len(seen) < 5 || completed != 2 || len(seenApp) < 3 {
			return fmt.Errorf("%d backups of the tenant's schedule seen, %d completed now; %d of the app's", len(seen), completed, len(seenApp))
		}
		return nil
	}))
	for _, name := range []string{"often", "app-wide"} {
		sb := &tenantryv1.ScheduledBackup{}
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, sb))
		patch := client.MergeFrom(sb.DeepCopy())
		sb.Spec.Suspend = true
		must(t, k8s.Patch(ctx, sb, patch))
	}
	// The store holds the files of the backups still there, and of no other.
	must(t, eventually(30*time.Second, func() error {
		dirs := map[string]bool{}
		keys, err := server.Keys(ctx, bucket, "tenantry/"+f.ns+"/daily/")
		must(t, err)
		for _, k := range keys {
			dirs[strings.Split(strings.TrimPrefix(k, "tenantry/"+f.ns+"/daily/"), "/")[0]] = true
		}
		var live []string
		for _, b := range list("often") {
			if b.DeletionTimestamp.IsZero() && b.Status.Phase == tenantryv1.BackupCompleted {
				live = append(live, b.Name+"-"+string(b.UID))
			}
		}
		if len(dirs) != len(live) {
			return fmt.Errorf("the store holds %d backups of the tenant, %d Backups are left", len(dirs), len(live))
		}
		for _, d := range live {
			if !dirs[d] {
				return fmt.Errorf("the store lacks %s", d)
			}
		}
		return nil
	}))
	// keep.for: the app's backups go two seconds after they completed.
	must(t, eventually(30*time.Second, func() error {
		if n := len(list("app-wide")); n != 0 {
			return fmt.Errorf("%d of the app's backups left", n)
		}
		keys, err := server.Keys(ctx, bucket, "tenantry/"+f.ns+"/other/")
		if err != nil || len(keys) != 0 {
			return fmt.Errorf("%d files of the app's backups left (%v)", len(keys), err)
		}
		return nil
	}))
}
