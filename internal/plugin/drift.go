package plugin

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// driftReport is the report of kubectl tenantry drift.
type driftReport struct {
	// Compared is the number of tenants whose schema was compared with the release; Drifted lists those
	// that differ, planted code first, and Uncompared those whose last comparison failed.
	Compared   int          `json:"compared"`
	Drifted    []tenantLine `json:"drifted"`
	Uncompared []tenantLine `json:"uncompared"`
}

func (c *cli) driftCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "Tenants whose schema differs from the release's, with their differences",
		Long: "drift lists the tenants whose schema differs from the one their release's migrations make (their " +
			"SchemaDrift condition), planted code first, with what differs; and those whose schema could not be " +
			"compared. It exits 5 when a tenant drifted or could not be compared. docs/drift.md says what to do about it.",
		Example: "  kubectl tenantry drift -A\n  kubectl tenantry drift -o json | jq '.drifted[].name'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := c.scope()
			if err != nil {
				return err
			}
			tenants, err := c.tenants(cmd.Context(), ns)
			if err != nil {
				return err
			}
			report := driftReport{Drifted: []tenantLine{}, Uncompared: []tenantLine{}}
			for i := range tenants {
				t := &tenants[i]
				cond := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionSchemaDrift)
				switch {
				case cond == nil:
					continue
				case cond.Status == metav1.ConditionUnknown:
					report.Uncompared = append(report.Uncompared, tenantLine{Namespace: t.Namespace, Name: t.Name,
						Shard: t.Status.Shard, SchemaVersion: t.Status.SchemaVersion, Reason: cond.Reason, Message: cond.Message})
					continue
				}
				report.Compared++
				if d := driftOf(t); d != nil {
					report.Drifted = append(report.Drifted, *d)
				}
			}
			plantedFirst(report.Drifted)
			printed, err := c.print(&report)
			if !printed {
				c.printDrift(ns, &report)
			}
			if err == nil && len(report.Drifted)+len(report.Uncompared) > 0 {
				// A schema that could not be compared may hide what a compared one would show.
				return exit(ExitAttention, "%d tenant(s) drifted, %d could not be compared", len(report.Drifted), len(report.Uncompared))
			}
			return err
		},
	}
	c.listFlags(cmd, "json|yaml|wide")
	return cmd
}

// plantedFirst orders drifted tenants: planted code first, then the most differences.
func plantedFirst(lines []tenantLine) {
	sort.SliceStable(lines, func(i, j int) bool {
		a, b := lines[i], lines[j]
		return a.Planted > b.Planted || a.Planted == b.Planted && a.Differences > b.Differences
	})
}

// printDrift writes the drift report as text.
func (c *cli) printDrift(ns string, r *driftReport) {
	if len(r.Drifted) == 0 {
		_, _ = fmt.Fprintf(c.out, "%s: the %d tenant(s) compared%s match their release.\n", c.paint("green", "No drift"),
			r.Compared, c.where(ns))
	}
	w := c.table()
	if len(r.Drifted) > 0 {
		wide := c.output == "wide"
		header := "NAMESPACE\tTENANT\tVERSION\tDIFFERENCES\tPLANTED\tSHARD"
		if wide {
			header += "\tFOUND\tREASON"
		}
		_, _ = fmt.Fprintln(w, header)
		for _, t := range r.Drifted {
			planted := fmt.Sprint(t.Planted)
			if t.Planted > 0 {
				planted = c.paint("red", planted)
			}
			_, _ = fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s", t.Namespace, t.Name, t.SchemaVersion, t.Differences, planted, t.Shard)
			if wide {
				found := "-"
				if t.CheckedAt != nil {
					found = age(t.CheckedAt.Time) + " ago"
				}
				_, _ = fmt.Fprintf(w, "\t%s\t%s", found, t.Reason)
			}
			_, _ = fmt.Fprintln(w)
		}
		_ = w.Flush()
		for _, t := range r.Drifted {
			_, _ = fmt.Fprintf(c.out, "\n%s/%s:\n", t.Namespace, c.paint("bold", t.Name))
			for _, d := range t.Details {
				_, _ = fmt.Fprintln(c.out, "  "+d)
			}
			if int(t.Differences) > len(t.Details) {
				_, _ = fmt.Fprintf(c.out, "  ... and %d more\n", int(t.Differences)-len(t.Details))
			}
		}
	}
	if len(r.Uncompared) > 0 {
		_, _ = fmt.Fprintf(c.out, "\n%s\n", c.paint("yellow", fmt.Sprintf("Could not be compared (%d):", len(r.Uncompared))))
		w = c.table()
		for _, t := range r.Uncompared {
			_, _ = fmt.Fprintf(w, "%s\t%s\t%s\n", t.Namespace, t.Name, oneLine(t.Message))
		}
		_ = w.Flush()
	}
}
