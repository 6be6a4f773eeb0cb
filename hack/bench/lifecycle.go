package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/test/utils/objectstore"
	"tenantry.dev/tenantry/test/utils/pgcluster"
	"tenantry.dev/tenantry/test/utils/tenantdata"
)

// lifecycle backs up a tenant of n expenses (besides a row in every other table) to SeaweedFS, restores
// it into a new tenant, and clones an empty template, one at a time; and, on the same cluster in the same
// run, the floors: pg_dump of the tenant's schema to a local file in the custom format with the same
// compression (gzip level 6), and pg_restore of that file into an empty database. It also measures the
// operator's memory during the backup: its peak resident set, reset just before (clear_refs), above its
// resident set then.
func lifecycle(ctx context.Context, n int) error {
	store, err := objectstore.Start()
	if err != nil {
		return err
	}
	defer store.Stop()
	s, err := startStack(concurrency, "--object-store-endpoints=127.0.0.1")
	if err != nil {
		return err
	}
	defer s.stop()
	const ns = "lifecycle"
	url, err := s.newApp(ctx, ns)
	if err != nil {
		return err
	}
	if err := store.MakeBucket(ctx, "backups"); err != nil {
		return err
	}
	if err := s.k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s3"},
		Data: map[string][]byte{tenantryv1.ObjectStoreAccessKeyID: []byte(store.AccessKeyID),
			tenantryv1.ObjectStoreSecretAccessKey: []byte(store.SecretAccessKey)}}); err != nil {
		return err
	}
	app := &tenantryv1.ExpenseApp{}
	if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app); err != nil {
		return err
	}
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Backup = &tenantryv1.AppBackupSpec{ObjectStore: tenantryv1.ObjectStore{DestinationPath: "s3://backups/bench",
		EndpointURL: store.Endpoint, ForcePathStyle: true, Credentials: tenantryv1.LocalSecretRef{SecretName: "s3"}}}
	if err := s.k8s.Patch(ctx, app, patch); err != nil {
		return err
	}
	rw, err := s.watchReady(ctx, ns)
	if err != nil {
		return err
	}
	defer rw.stop()
	apply := func(t *tenantryv1.Tenant) (time.Duration, error) {
		start := time.Now()
		if err := s.k8s.Create(ctx, t); err != nil {
			return 0, err
		}
		ready, err := rw.wait(ctx, []string{t.Name}, 30*time.Minute)
		if err != nil {
			return 0, err
		}
		return ready[t.Name].Sub(start), nil
	}
	if _, err := apply(benchTenant(ns, "big")); err != nil {
		return err
	}

	db, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	database := db.Config().Database
	schema := registry.TenantName(database, ns, "big")
	fmt.Fprintf(os.Stderr, "bench: writing %d expenses into %s\n", n, schema)
	if err := tenantdata.Fill(ctx, db, schema); err != nil {
		return err
	}
	q := pgx.Identifier{schema}.Sanitize()
	if _, err := db.Exec(ctx, `INSERT INTO `+q+`.expenses (budget_id, spent_on, description, note, amount_minor, status, created_by)
SELECT (SELECT min(id) FROM `+q+`.budgets) + g % 6, date '2026-01-01' + g % 330, 'Expense number ' || g || ' for the quarterly offsite',
       CASE WHEN g % 4 = 0 THEN 'receipt ' || md5(g::text) ELSE '' END, 100 + g % 100000, 'approved', (SELECT min(id) FROM `+q+`.users)
FROM generate_series(1, $1) g`, n); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return err
	}
	var size int64
	if err := db.QueryRow(ctx, `SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1) AND c.relkind = 'r'`, schema).Scan(&size); err != nil {
		return err
	}

	bin, err := pgcluster.BinDir()
	if err != nil {
		return err
	}
	dumpFile := filepath.Join(s.dir, "big.dump")
	if err := settle(ctx, db); err != nil {
		return err
	}
	start := time.Now()
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "-Fc", "-Z", "6", "-n", schema, "-f", dumpFile, url).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_dump: %v: %s", err, out)
	}
	dumpFloor := time.Since(start)
	dumpInfo, err := os.Stat(dumpFile)
	if err != nil {
		return err
	}

	// The backup, with the operator's peak memory reset just before.
	if err := settle(ctx, db); err != nil {
		return err
	}
	rss0, err := resetPeak(s.operator.Process.Pid)
	if err != nil {
		return err
	}
	start = time.Now()
	if err := s.k8s.Create(ctx, &tenantryv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big-backup"},
		Spec: tenantryv1.BackupSpec{Tenant: tenantryv1.LocalRef{Name: "big"}}}); err != nil {
		return err
	}
	b := &tenantryv1.Backup{}
	for {
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "big-backup"}, b); err != nil {
			return err
		}
		if b.Status.Phase == tenantryv1.BackupCompleted {
			break
		}
		if b.Status.Phase == tenantryv1.BackupFailed {
			return fmt.Errorf("the backup failed: %s", b.Status.Error)
		}
		if time.Since(start) > 30*time.Minute {
			return fmt.Errorf("the backup did not complete in 30 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	backupWall := time.Since(start)
	_, peak, err := s.usage()
	if err != nil {
		return err
	}
	growth := peak - rss0

	// pg_restore of the dump into an empty database: the floor of the restore.
	if err := settle(ctx, db); err != nil {
		return err
	}
	restoreURL, err := s.pg.NewDatabase(ctx, "restore_floor")
	if err != nil {
		return err
	}
	start = time.Now()
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_restore"), "-d", restoreURL, "--no-owner", dumpFile).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_restore: %v: %s", err, out)
	}
	restoreFloor := time.Since(start)

	// The restore into a new tenant: apply→Ready, which includes its onboarding and its migrations.
	if err := settle(ctx, db); err != nil {
		return err
	}
	restored := benchTenant(ns, "restored")
	restored.Spec.Source = &tenantryv1.TenantSource{Backup: &tenantryv1.LocalRef{Name: "big-backup"}}
	restoreWall, err := apply(restored)
	if err != nil {
		return err
	}
	var got int64
	if err := db.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{registry.TenantName(database, ns, "restored"), "expenses"}.Sanitize()).Scan(&got); err != nil {
		return err
	}
	if got != int64(n)+500 {
		return fmt.Errorf("the restored tenant holds %d expenses, want %d", got, n+500)
	}

	// Clones of an empty template, one at a time, against plain onboarding one at a time.
	if _, err := apply(benchTenant(ns, "template")); err != nil {
		return err
	}
	var clones, plain []time.Duration
	for i := -1; i < 20; i++ { // -1: a warm-up of each
		c := benchTenant(ns, fmt.Sprintf("clone%02d", i+1))
		c.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "template"}}
		d, err := apply(c)
		if err != nil {
			return err
		}
		p, err := apply(benchTenant(ns, fmt.Sprintf("plain%02d", i+1)))
		if err != nil {
			return err
		}
		if i >= 0 {
			clones, plain = append(clones, d), append(plain, p)
		}
	}
	for _, name := range []string{"clone01", "restored"} {
		t := &tenantryv1.Tenant{}
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, t); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSourceCopied) {
			return fmt.Errorf("tenant %s is Ready without SourceCopied", name)
		}
	}
	slices.Sort(clones)
	slices.Sort(plain)

	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Printf("\n### Lifecycle: a tenant of %d expenses (%s on disk)\n\n", n, mib(size))
	fmt.Println("| step | Tenantry | floor, same run | ratio |")
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| backup (Backup created → Completed; pg_dump -Fc -Z 6 -n to a local file) | %.2f s (%s stored) | %.2f s (%s) | %.2fx |\n",
		backupWall.Seconds(), mib(b.Status.Size), dumpFloor.Seconds(), mib(dumpInfo.Size()), backupWall.Seconds()/dumpFloor.Seconds())
	fmt.Printf("| restore into a new tenant (apply → Ready; pg_restore into an empty database) | %.2f s | %.2f s | %.2fx |\n",
		restoreWall.Seconds(), restoreFloor.Seconds(), restoreWall.Seconds()/restoreFloor.Seconds())
	fmt.Printf("| clone of an empty template, apply → Ready, p50 / max of 20 (plain onboarding beside it) | %s / %s | %s / %s | |\n",
		ms(pct(clones, 50)), ms(clones[len(clones)-1]), ms(pct(plain, 50)), ms(plain[len(plain)-1]))
	fmt.Printf("| operator memory during the backup (peak above the resident set before) | %s | | |\n", mib(growth))
	fmt.Printf("\nThe backup's own duration (snapshot to manifest, status.duration): %s; %d rows in %d tables.\n\n",
		b.Status.Duration.Round(time.Millisecond), b.Status.Rows, b.Status.Tables)
	fmt.Printf("lifecycle: backup of %d expenses %.2f s (pg_dump floor %.2f s), restore %.2f s (pg_restore floor %.2f s), clone %.0f ms\n",
		n, backupWall.Seconds(), dumpFloor.Seconds(), restoreWall.Seconds(), restoreFloor.Seconds(), float64(pct(clones, 50).Microseconds())/1000)
	return nil
}

// resetPeak resets a process's peak resident set (VmHWM) to its resident set now, and returns that.
func resetPeak(pid int) (int64, error) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return 0, fmt.Errorf("resetting the operator's peak memory: %w", err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			_, _ = fmt.Sscan(strings.Fields(line)[1], &kb)
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
