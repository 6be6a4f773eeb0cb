package plugin

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// fleetStatus is the report of kubectl tenantry status: one entry per ExpenseApp.
type fleetStatus struct {
	Apps []appStatus `json:"apps"`
}

// appStatus is one ExpenseApp's fleet.
type appStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Ready is the ExpenseApp's Ready condition ("True", "False", "Unknown"), and ReadyMessage its message.
	Ready        string `json:"ready"`
	ReadyMessage string `json:"readyMessage,omitempty"`
	// Image is the image the Deployment runs, and ImageWanted spec.image while the rollout still holds it
	// back.
	Image               string `json:"image,omitempty"`
	ImageWanted         string `json:"imageWanted,omitempty"`
	TargetSchemaVersion int64  `json:"targetSchemaVersion"`
	Tenants             int    `json:"tenants"`
	ReadyTenants        int    `json:"readyTenants"`
	TenantsAtTarget     int    `json:"tenantsAtTarget"`
	// Rollout is the fleet migration: its FleetMigrated condition, and the tenants whose migration
	// failed.
	Rollout       *condition `json:"rollout,omitempty"`
	FailedTenants []string   `json:"failedTenants,omitempty"`
	Shards        []shard    `json:"shards,omitempty"`
	// Drift is the last drift pass; Drifted and Planted count the tenants it found.
	Drift   *tenantryv1.FleetDrift `json:"drift,omitempty"`
	Drifted int                    `json:"drifted"`
	Planted int                    `json:"planted"`
	// NotReady and DriftedTenants name the tenants that need a person (at most --limit of each), and
	// Largest the largest tenants by schema size.
	NotReady       []tenantLine `json:"notReady,omitempty"`
	DriftedTenants []tenantLine `json:"driftedTenants,omitempty"`
	Largest        []tenantLine `json:"largest,omitempty"`
}

// condition is a condition as a report shows it.
type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Since is when it last changed.
	Since metav1.Time `json:"since"`
	// Says is the condition in plain words.
	Says string `json:"says"`
}

// shard is one shard of an ExpenseApp.
type shard struct {
	Name          string `json:"name"`
	Tenants       int32  `json:"tenants"`
	SchemaVersion int64  `json:"schemaVersion"`
	Reachable     bool   `json:"reachable"`
	Message       string `json:"message,omitempty"`
}

// tenantLine is one tenant in a list of a report.
type tenantLine struct {
	Namespace     string `json:"namespace"`
	Name          string `json:"name"`
	Shard         string `json:"shard,omitempty"`
	SchemaVersion int64  `json:"schemaVersion"`
	// Reason and Message: why it is not Ready, or how its schema drifted.
	Reason      string   `json:"reason,omitempty"`
	Message     string   `json:"message,omitempty"`
	Differences int32    `json:"differences,omitempty"`
	Planted     int32    `json:"planted,omitempty"`
	Details     []string `json:"details,omitempty"`
	// CheckedAt is when the drift was found.
	CheckedAt   *metav1.Time `json:"checkedAt,omitempty"`
	SchemaBytes int64        `json:"schemaBytes,omitempty"`
	Users       int64        `json:"users,omitempty"`
	Expenses    int64        `json:"expenses,omitempty"`
}

func (c *cli) statusCommand() *cobra.Command {
	limit := 10
	cmd := &cobra.Command{
		Use:   "status",
		Short: "The fleet of each ExpenseApp: versions, rollout, shards, tenants not Ready or drifted, the largest",
		Long: "status shows each ExpenseApp of the namespace (every namespace with -A): the image and schema version it " +
			"runs, the rollout in progress, its shards with their tenants, the tenants not Ready or drifted, and the " +
			"largest tenants by schema size. It exits 5 when a tenant is not Ready.",
		Example: "  kubectl tenantry status\n  kubectl tenantry status -A -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, apps, tenants, err := c.fleet(cmd.Context())
			if err != nil {
				return err
			}
			if c.output == "wide" {
				limit = -1
			}
			report := fleetReport(apps, tenants, limit)
			printed, err := c.print(&report)
			switch {
			case err != nil:
				return err
			case !printed && len(report.Apps) == 0:
				_, err := fmt.Fprintln(c.out, "No ExpenseApps found"+c.where(ns)+".")
				return err
			}
			notReady := 0
			for i := range report.Apps {
				if !printed {
					c.printApp(&report.Apps[i])
				}
				notReady += report.Apps[i].Tenants - report.Apps[i].ReadyTenants
			}
			if notReady > 0 {
				return exit(ExitAttention, "%d tenant(s) not Ready", notReady)
			}
			return nil
		},
	}
	c.listFlags(cmd, "json|yaml|wide")
	cmd.Flags().IntVar(&limit, "limit", limit, "How many tenants each list shows at most (not Ready, drifted, largest); "+
		"-o wide shows them all.")
	return cmd
}

// where says "in namespace X" or "in any namespace".
func (c *cli) where(ns string) string {
	if ns == "" {
		return " in any namespace"
	}
	return " in namespace " + ns
}

// fleetReport sums up each app's fleet from its Tenants' status.
func fleetReport(apps []tenantryv1.ExpenseApp, tenants []tenantryv1.Tenant, limit int) fleetStatus {
	report := fleetStatus{Apps: []appStatus{}}
	byApp := map[[2]string][]*tenantryv1.Tenant{}
	for i := range tenants {
		t := &tenants[i]
		key := [2]string{t.Namespace, t.Spec.AppRef.Name}
		byApp[key] = append(byApp[key], t)
	}
	for i := range apps {
		app := &apps[i]
		s := appStatus{Namespace: app.Namespace, Name: app.Name, Ready: "Unknown", Image: app.Status.Image,
			TargetSchemaVersion: app.Status.TargetSchemaVersion, FailedTenants: app.Status.FailedTenants,
			Drift: app.Status.Drift}
		if c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionReady); c != nil {
			s.Ready, s.ReadyMessage = string(c.Status), c.Message
		}
		if app.Spec.Image != "" && app.Spec.Image != app.Status.Image {
			s.ImageWanted = app.Spec.Image
		}
		if c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionFleetMigrated); c != nil {
			s.Rollout = plain(c)
		}
		for _, sh := range app.Status.Shards {
			s.Shards = append(s.Shards, shard{Name: sh.Name, Tenants: sh.Tenants, SchemaVersion: sh.SchemaVersion,
				Reachable: sh.Reachable, Message: sh.Message})
		}
		members := byApp[[2]string{app.Namespace, app.Name}]
		s.Tenants = len(members)
		for _, t := range members {
			line := tenantLine{Namespace: t.Namespace, Name: t.Name, Shard: t.Status.Shard, SchemaVersion: t.Status.SchemaVersion}
			if ready := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady); ready != nil &&
				ready.Status == metav1.ConditionTrue {
				s.ReadyTenants++
			} else {
				line.Reason, line.Message = whyNotReady(t)
				s.NotReady = append(s.NotReady, line)
			}
			if s.TargetSchemaVersion > 0 && t.Status.SchemaVersion == s.TargetSchemaVersion {
				s.TenantsAtTarget++
			}
			if d := driftOf(t); d != nil {
				s.Drifted++
				if d.Planted > 0 {
					s.Planted++
				}
				s.DriftedTenants = append(s.DriftedTenants, *d)
			}
			if u := t.Status.Usage; u != nil {
				line.SchemaBytes, line.Users, line.Expenses = u.SchemaBytes, u.Users, u.Expenses
				line.Reason, line.Message = "", ""
				s.Largest = append(s.Largest, line)
			}
		}
		plantedFirst(s.DriftedTenants)
		sort.SliceStable(s.Largest, func(i, j int) bool { return s.Largest[i].SchemaBytes > s.Largest[j].SchemaBytes })
		s.NotReady, s.DriftedTenants, s.Largest = first(s.NotReady, limit), first(s.DriftedTenants, limit), first(s.Largest, limit)
		report.Apps = append(report.Apps, s)
	}
	return report
}

// first is at most the first n of list.
func first[T any](list []T, n int) []T {
	if n >= 0 && len(list) > n {
		return list[:n]
	}
	return list
}

// whyNotReady is the reason and message of a tenant that is not Ready: Stalled's if it stalled, else
// Ready's.
func whyNotReady(t *tenantryv1.Tenant) (string, string) {
	if c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
		return c.Reason, c.Message
	}
	if c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady); c != nil {
		return c.Reason, c.Message
	}
	return "Pending", "the operator has not reconciled it yet"
}

// driftOf is the tenant as a drift report lists it, or nil if its schema matches the release (or was
// never compared).
func driftOf(t *tenantryv1.Tenant) *tenantLine {
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionSchemaDrift)
	if c == nil || c.Status != metav1.ConditionTrue {
		return nil
	}
	line := &tenantLine{Namespace: t.Namespace, Name: t.Name, Shard: t.Status.Shard, SchemaVersion: t.Status.SchemaVersion,
		Reason: c.Reason, Message: c.Message}
	if d := t.Status.Drift; d != nil {
		line.Differences, line.Planted, line.Details, line.CheckedAt = d.Differences, d.Planted, d.Details, &d.CheckedAt
	}
	return line
}

// printApp writes one app's fleet as text.
func (c *cli) printApp(s *appStatus) {
	ready := c.paint("green", "Ready")
	if s.Ready != string(metav1.ConditionTrue) {
		ready = c.paint("red", "Not Ready") + ": " + s.ReadyMessage
	}
	_, _ = fmt.Fprintf(c.out, "%s %s/%s  %s\n", c.paint("bold", "ExpenseApp"), s.Namespace, s.Name, ready)
	w := c.table()
	image := s.Image
	if s.ImageWanted != "" {
		image += " (" + s.ImageWanted + " waits for every tenant to be at version " + fmt.Sprint(s.TargetSchemaVersion) + ")"
	}
	_, _ = fmt.Fprintf(w, "  Image:\t%s\n", orDash(image))
	_, _ = fmt.Fprintf(w, "  Schema version:\t%d; %d of %d tenants at it\n", s.TargetSchemaVersion, s.TenantsAtTarget, s.Tenants)
	if r := s.Rollout; r != nil {
		state := r.Says
		if r.Status != string(metav1.ConditionTrue) {
			state = c.paint("yellow", state) + ": " + r.Message
		}
		_, _ = fmt.Fprintf(w, "  Rollout:\t%s\n", state)
	}
	if len(s.FailedTenants) > 0 {
		_, _ = fmt.Fprintf(w, "  Failed migrations:\t%s\n", c.paint("red", strings.Join(s.FailedTenants, ", ")))
	}
	tenants := fmt.Sprintf("%d, %d Ready", s.Tenants, s.ReadyTenants)
	if n := s.Tenants - s.ReadyTenants; n > 0 {
		tenants += ", " + c.paint("red", fmt.Sprintf("%d not Ready", n))
	}
	if s.Drifted > 0 {
		tenants += ", " + c.paint("yellow", fmt.Sprintf("%d drifted", s.Drifted))
	}
	if s.Planted > 0 {
		tenants += " (" + c.paint("red", fmt.Sprintf("%d with planted code", s.Planted)) + ")"
	}
	_, _ = fmt.Fprintf(w, "  Tenants:\t%s\n", tenants)
	if d := s.Drift; d != nil {
		pass := fmt.Sprintf("%s ago, %d compared in %s", age(d.CheckedAt.Time), d.Compared, d.Duration.Round(1e6))
		if d.Failed > 0 {
			pass += fmt.Sprintf(", %d could not be read", d.Failed)
		}
		if d.Error != "" {
			pass += "; " + d.Error
		}
		_, _ = fmt.Fprintf(w, "  Drift pass:\t%s\n", pass)
	}
	_ = w.Flush()

	if len(s.Shards) > 0 {
		c.section("Shards")
		w = c.table()
		_, _ = fmt.Fprintln(w, "  SHARD\tTENANTS\tVERSION\tREACHABLE")
		for _, sh := range s.Shards {
			reach := "yes"
			if !sh.Reachable {
				reach = c.paint("red", "no") + ": " + sh.Message
			}
			_, _ = fmt.Fprintf(w, "  %s\t%d\t%d\t%s\n", sh.Name, sh.Tenants, sh.SchemaVersion, reach)
		}
		_ = w.Flush()
	}
	if len(s.NotReady) > 0 {
		c.section(fmt.Sprintf("Not Ready (%d)", s.Tenants-s.ReadyTenants))
		w = c.table()
		_, _ = fmt.Fprintln(w, "  TENANT\tVERSION\tSHARD\tREASON\tMESSAGE")
		for _, t := range s.NotReady {
			_, _ = fmt.Fprintf(w, "  %s\t%d\t%s\t%s\t%s\n", t.Name, t.SchemaVersion, orDash(t.Shard), c.paint("red", t.Reason),
				oneLine(t.Message))
		}
		_ = w.Flush()
	}
	if len(s.DriftedTenants) > 0 {
		c.section(fmt.Sprintf("Drifted (%d; kubectl tenantry drift says how)", s.Drifted))
		w = c.table()
		_, _ = fmt.Fprintln(w, "  TENANT\tDIFFERENCES\tPLANTED")
		for _, t := range s.DriftedTenants {
			planted := fmt.Sprint(t.Planted)
			if t.Planted > 0 {
				planted = c.paint("red", planted)
			}
			_, _ = fmt.Fprintf(w, "  %s\t%d\t%s\n", t.Name, t.Differences, planted)
		}
		_ = w.Flush()
	}
	if len(s.Largest) > 0 {
		c.section("Largest tenants")
		w = c.table()
		_, _ = fmt.Fprintln(w, "  TENANT\tSIZE\tUSERS\tEXPENSES\tSHARD")
		for _, t := range s.Largest {
			_, _ = fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%s\n", t.Name, size(t.SchemaBytes), t.Users, t.Expenses, t.Shard)
		}
		_ = w.Flush()
	}
	_, _ = fmt.Fprintln(c.out)
}

// section writes a heading within an app's report.
func (c *cli) section(title string) { _, _ = fmt.Fprintln(c.out, "  "+c.paint("bold", title)) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
