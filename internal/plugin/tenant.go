package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// tenantReport is the report of kubectl tenantry tenant: the Tenant, its conditions in plain words, and
// its recent events.
type tenantReport struct {
	Tenant     *tenantryv1.Tenant `json:"tenant"`
	Conditions []condition        `json:"conditions"`
	Events     []event            `json:"events"`
}

// event is one recent event of a tenant.
type event struct {
	Type    string      `json:"type"`
	Reason  string      `json:"reason"`
	Message string      `json:"message"`
	Count   int32       `json:"count,omitempty"`
	Last    metav1.Time `json:"last"`
}

// says is what each condition means, in plain words, when True and when not.
var says = map[string][2]string{
	tenantryv1.ConditionReady:             {"serving its users", "not serving its users"},
	tenantryv1.ConditionReconciling:       {"the operator is working on it", "nothing left to do"},
	tenantryv1.ConditionStalled:           {"blocked: it needs a person", "not blocked"},
	tenantryv1.ConditionSchemaReady:       {"its schema and role exist", "its schema is not ready"},
	tenantryv1.ConditionMigrationsApplied: {"its schema is at the release's version", "its migrations have not all run"},
	tenantryv1.ConditionRegistered:        {"the app knows its hosts and settings", "the app does not know it yet"},
	tenantryv1.ConditionRouted:            {"its hosts are routed to the app", "its hosts are not routed"},
	tenantryv1.ConditionAdminReady:        {"its first admin can sign in", "its first admin is not set up"},
	tenantryv1.ConditionMoving:            {"moving to another shard", "a move is blocked"},
	tenantryv1.ConditionSchemaDrift:       {"its schema differs from the release's", "its schema matches the release's"},
	tenantryv1.ConditionFleetMigrated:     {"every tenant is at the release's version", "the rollout is under way"},
}

// plain is a condition with what it says in plain words.
func plain(c *metav1.Condition) *condition {
	p := &condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message, Since: c.LastTransitionTime}
	words, known := says[c.Type]
	switch {
	case !known:
		p.Says = c.Type + " is " + string(c.Status)
	case c.Status == metav1.ConditionTrue:
		p.Says = words[0]
	case c.Status == metav1.ConditionUnknown && c.Type == tenantryv1.ConditionSchemaDrift:
		p.Says = "its schema could not be compared"
	case c.Status == metav1.ConditionUnknown:
		p.Says = "not known yet"
	default:
		p.Says = words[1]
	}
	return p
}

func (c *cli) tenantCommand() *cobra.Command {
	events := 10
	cmd := &cobra.Command{
		Use:   "tenant NAME",
		Short: "One tenant in full: conditions in plain words, hosts, shard, version, usage, drift, recent events",
		Example: "  kubectl tenantry tenant acme\n" +
			"  kubectl tenantry tenant acme -n customers -o yaml",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeTenants,
		RunE: c.onTenant(func(ctx context.Context, t *tenantryv1.Tenant, args []string) error {
			var err error
			report := tenantReport{Tenant: t, Conditions: []condition{}}
			for i := range t.Status.Conditions {
				report.Conditions = append(report.Conditions, *plain(&t.Status.Conditions[i]))
			}
			if report.Events, err = c.events(ctx, t, events); err != nil {
				return err
			}
			if printed, err := c.print(&report); printed {
				return err
			}
			c.printTenant(&report)
			return nil
		}),
	}
	c.outputFlag(cmd, "json|yaml")
	cmd.Flags().IntVar(&events, "events", events, "How many of the tenant's recent events to show.")
	return cmd
}

// events reads the last n events of a Tenant, newest first.
func (c *cli) events(ctx context.Context, t *tenantryv1.Tenant, n int) ([]event, error) {
	k, err := c.kube()
	if err != nil {
		return nil, err
	}
	var list corev1.EventList
	err = k.List(ctx, &list, client.InNamespace(t.Namespace), client.MatchingFieldsSelector{
		Selector: fields.SelectorFromSet(fields.Set{"involvedObject.kind": "Tenant", "involvedObject.name": t.Name,
			"involvedObject.uid": string(t.UID)})})
	if err != nil {
		return nil, err
	}
	out := []event{}
	for _, e := range list.Items {
		last := e.LastTimestamp.Time
		if e.Series != nil && e.Series.LastObservedTime.After(last) {
			last = e.Series.LastObservedTime.Time
		}
		if e.EventTime.After(last) {
			last = e.EventTime.Time
		}
		if last.IsZero() {
			last = e.CreationTimestamp.Time
		}
		count := e.Count
		if e.Series != nil && e.Series.Count > count {
			count = e.Series.Count
		}
		out = append(out, event{Type: e.Type, Reason: e.Reason, Message: e.Message, Count: count, Last: metav1.NewTime(last)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Last.After(out[j].Last.Time) })
	return first(out, n), nil
}

// printTenant writes one tenant as text.
func (c *cli) printTenant(r *tenantReport) {
	t := r.Tenant
	state := c.paint("green", "Ready")
	if ready := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady); ready == nil || ready.Status != metav1.ConditionTrue {
		reason, msg := whyNotReady(t)
		state = c.paint("red", "Not Ready") + " (" + reason + "): " + msg
	}
	if t.Spec.Suspend {
		state += ", " + c.paint("yellow", "suspended") + " (the app answers its hosts with 503)"
	}
	if t.DeletionTimestamp != nil {
		state += ", " + c.paint("yellow", "being deleted")
	}
	_, _ = fmt.Fprintf(c.out, "%s %s/%s  %s\n", c.paint("bold", "Tenant"), t.Namespace, t.Name, state)
	w := c.table()
	_, _ = fmt.Fprintf(w, "  Display name:\t%s\n", t.DisplayNameOrName())
	_, _ = fmt.Fprintf(w, "  App:\t%s\n", t.Spec.AppRef.Name)
	_, _ = fmt.Fprintf(w, "  Hosts:\t%s\n", strings.Join(t.Spec.Hosts, ", "))
	_, _ = fmt.Fprintf(w, "  URL:\t%s\n", orDash(t.Status.URL))
	shard := t.Status.Shard
	switch {
	case shard == "" && t.Spec.Shard != "":
		shard = "none yet (spec.shard asks for " + t.Spec.Shard + ")"
	case shard == "":
		shard = "none yet"
	case t.Spec.Shard != "" && t.Spec.Shard != shard:
		shard += " (moving to " + t.Spec.Shard + ")"
	}
	if t.Status.Node != "" {
		shard += ", Citus worker " + t.Status.Node
	}
	_, _ = fmt.Fprintf(w, "  Shard:\t%s\n", shard)
	if t.Status.Schema == "" {
		_, _ = fmt.Fprintf(w, "  Schema:\tnot made yet\n")
	} else {
		_, _ = fmt.Fprintf(w, "  Schema:\t%s, version %d\n", t.Status.Schema, t.Status.SchemaVersion)
	}
	_, _ = fmt.Fprintf(w, "  Deletion policy:\t%s\n", t.Spec.DeletionPolicy)
	_, _ = fmt.Fprintf(w, "  Admin:\t%s (login in Secret %s)\n", t.Spec.Admin.Email, orDash(t.Status.AdminSecretName))
	if u := t.Status.Usage; u != nil {
		_, _ = fmt.Fprintf(w, "  Usage:\t%s (%d active), %s, %s; measured %s ago\n", plural(u.Users, "user"), u.ActiveUsers,
			plural(u.Expenses, "expense"), size(u.SchemaBytes), age(u.MeasuredAt.Time))
	} else {
		_, _ = fmt.Fprintf(w, "  Usage:\tnot measured yet\n")
	}
	_, _ = fmt.Fprintf(w, "  Drift:\t%s\n", c.driftSummary(t))
	_ = w.Flush()
	if d := t.Status.Drift; d != nil && len(d.Details) > 0 {
		for _, line := range d.Details {
			_, _ = fmt.Fprintln(c.out, "    "+line)
		}
	}
	if d := t.Status.Drift; d != nil && d.RepairMessage != "" {
		_, _ = fmt.Fprintln(c.out, "  Last repair: "+d.RepairMessage)
	}

	c.section("Conditions")
	w = c.table()
	_, _ = fmt.Fprintln(w, "  CONDITION\tSTATUS\tSAYS\tSINCE\tMESSAGE")
	for _, cond := range r.Conditions {
		_, _ = fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", cond.Type, cond.Status, c.paintCondition(cond), age(cond.Since.Time),
			oneLine(cond.Message))
	}
	_ = w.Flush()
	c.section("Events")
	if len(r.Events) == 0 {
		_, _ = fmt.Fprintln(c.out, "  none recent")
		return
	}
	w = c.table()
	_, _ = fmt.Fprintln(w, "  LAST\tTYPE\tREASON\tMESSAGE")
	for _, e := range r.Events {
		typ := e.Type
		if typ == corev1.EventTypeWarning {
			typ = c.paint("yellow", typ)
		}
		msg := oneLine(e.Message)
		if e.Count > 1 {
			msg += fmt.Sprintf(" (x%d)", e.Count)
		}
		_, _ = fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", age(e.Last.Time), typ, e.Reason, msg)
	}
	_ = w.Flush()
}

// paintCondition colours what a condition says: red when it is bad news, green when good.
func (c *cli) paintCondition(cond condition) string {
	bad := cond.Status != string(metav1.ConditionTrue)
	switch cond.Type {
	case tenantryv1.ConditionReconciling, tenantryv1.ConditionMoving:
		return c.paint("yellow", cond.Says)
	case tenantryv1.ConditionStalled, tenantryv1.ConditionSchemaDrift:
		bad = cond.Status == string(metav1.ConditionTrue)
	}
	if bad {
		return c.paint("red", cond.Says)
	}
	return c.paint("green", cond.Says)
}

// driftSummary says in one line how the tenant's schema compares with the release's.
func (c *cli) driftSummary(t *tenantryv1.Tenant) string {
	cond := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionSchemaDrift)
	d := t.Status.Drift
	switch {
	case cond == nil:
		return "not compared yet"
	case cond.Status == metav1.ConditionUnknown:
		return c.paint("yellow", "could not be compared") + ": " + cond.Message
	case cond.Status == metav1.ConditionFalse && d != nil:
		return fmt.Sprintf("matches the release at version %d (compared %s ago)", d.SchemaVersion, age(d.CheckedAt.Time))
	case d == nil:
		return cond.Message
	}
	s := fmt.Sprintf("%d difference(s) from the release at version %d, found %s ago", d.Differences, d.SchemaVersion,
		age(d.CheckedAt.Time))
	if d.Planted > 0 {
		return c.paint("red", fmt.Sprintf("%d planted object(s) that run code", d.Planted)) + "; " + s
	}
	return c.paint("yellow", s)
}

// plural is "1 user", "2 users".
func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// oneLine keeps a message on one line of a table, escaped for the terminal.
func oneLine(s string) string { return esc(strings.Join(strings.Fields(s), " ")) }

// since is how long ago t was, for progress lines.
func since(t time.Time) string { return time.Since(t).Round(100 * time.Millisecond).String() }
