package plugin

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// migrateReport is the report of kubectl tenantry migrate status: one entry per ExpenseApp.
type migrateReport struct {
	Apps []appMigration `json:"apps"`
}

// appMigration is where one app's fleet stands against its release.
type appMigration struct {
	Namespace           string `json:"namespace"`
	Name                string `json:"name"`
	TargetSchemaVersion int64  `json:"targetSchemaVersion"`
	Tenants             int    `json:"tenants"`
	TenantsAtTarget     int    `json:"tenantsAtTarget"`
	// Rollout is the FleetMigrated condition: under way, halted, or done.
	Rollout *condition `json:"rollout,omitempty"`
	// Failed names the tenants whose migration failed; Behind lists every tenant below the target
	// version, with why when it is not Ready.
	Failed []string     `json:"failed"`
	Behind []tenantLine `json:"behind"`
}

func (c *cli) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "The fleet's migrations",
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Which tenants are behind the release, and the rollout's progress and failures",
		Long: "migrate status shows, for each ExpenseApp, the schema version its release needs, how many tenants are " +
			"at it, the rollout's state (under way, halted by failures, done), the tenants whose migration failed " +
			"and every tenant still behind. It exits 5 when a tenant is behind or failed.",
		Example: "  kubectl tenantry migrate status\n  kubectl tenantry migrate status -A -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, apps, tenants, err := c.fleet(cmd.Context())
			if err != nil {
				return err
			}
			report := migrationReport(apps, tenants)
			behind := 0
			for _, a := range report.Apps {
				behind += len(a.Behind) + len(a.Failed)
			}
			printed, err := c.print(&report)
			if !printed {
				err = c.printMigrations(ns, &report)
			}
			if err == nil && behind > 0 {
				return exit(ExitAttention, "tenants are behind their release or failed to migrate")
			}
			return err
		},
	}
	c.listFlags(status, "json|yaml")
	cmd.AddCommand(status)
	return cmd
}

// migrationReport sums up each app's migrations from its Tenants' status.
func migrationReport(apps []tenantryv1.ExpenseApp, tenants []tenantryv1.Tenant) migrateReport {
	report := migrateReport{Apps: []appMigration{}}
	for i := range apps {
		app := &apps[i]
		m := appMigration{Namespace: app.Namespace, Name: app.Name, TargetSchemaVersion: app.Status.TargetSchemaVersion,
			Failed: append([]string{}, app.Status.FailedTenants...), Behind: []tenantLine{}}
		if cond := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionFleetMigrated); cond != nil {
			m.Rollout = plain(cond)
		}
		for j := range tenants {
			t := &tenants[j]
			if t.Namespace != app.Namespace || t.Spec.AppRef.Name != app.Name {
				continue
			}
			m.Tenants++
			if m.TargetSchemaVersion > 0 && t.Status.SchemaVersion >= m.TargetSchemaVersion {
				m.TenantsAtTarget++
				continue
			}
			line := tenantLine{Namespace: t.Namespace, Name: t.Name, Shard: t.Status.Shard, SchemaVersion: t.Status.SchemaVersion}
			if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) {
				line.Reason, line.Message = whyNotReady(t)
			} else if cond := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMigrationsApplied); cond != nil &&
				cond.Status != metav1.ConditionTrue {
				line.Reason, line.Message = cond.Reason, cond.Message
			}
			m.Behind = append(m.Behind, line)
		}
		report.Apps = append(report.Apps, m)
	}
	return report
}

// printMigrations writes the migrations report as text.
func (c *cli) printMigrations(ns string, r *migrateReport) error {
	if len(r.Apps) == 0 {
		_, err := fmt.Fprintln(c.out, "No ExpenseApps found"+c.where(ns)+".")
		return err
	}
	for _, a := range r.Apps {
		progress := fmt.Sprintf("%d of %d tenants at version %d", a.TenantsAtTarget, a.Tenants, a.TargetSchemaVersion)
		if a.TenantsAtTarget == a.Tenants {
			progress = c.paint("green", progress)
		}
		_, _ = fmt.Fprintf(c.out, "%s %s/%s  %s\n", c.paint("bold", "ExpenseApp"), a.Namespace, a.Name, progress)
		w := c.table()
		if ro := a.Rollout; ro != nil {
			state := c.paint("green", ro.Says)
			switch {
			case ro.Reason == tenantryv1.ReasonRolloutHalted:
				state = c.paint("red", "halted") + ": " + ro.Message
			case ro.Status != string(metav1.ConditionTrue):
				state = c.paint("yellow", ro.Says) + ": " + ro.Message
			}
			_, _ = fmt.Fprintf(w, "  Rollout:\t%s\n", state)
		}
		if len(a.Failed) > 0 {
			_, _ = fmt.Fprintf(w, "  Failed:\t%s\n", c.paint("red", fmt.Sprint(a.Failed)))
		}
		_ = w.Flush()
		if len(a.Behind) > 0 {
			c.section(fmt.Sprintf("Behind (%d)", len(a.Behind)))
			w = c.table()
			_, _ = fmt.Fprintln(w, "  TENANT\tVERSION\tSHARD\tREASON\tMESSAGE")
			for _, t := range a.Behind {
				_, _ = fmt.Fprintf(w, "  %s\t%d\t%s\t%s\t%s\n", t.Name, t.SchemaVersion, orDash(t.Shard), orDash(t.Reason),
					oneLine(t.Message))
			}
			_ = w.Flush()
		}
		_, _ = fmt.Fprintln(c.out)
	}
	return nil
}
