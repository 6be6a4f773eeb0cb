package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// fieldOwner is who the API server records as having made the plugin's edits.
const fieldOwner = client.FieldOwner("kubectl-tenantry")

// waitFlags are --wait and --timeout, for the commands that change a tenant.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (wf *waitFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&wf.wait, "wait", true, "Wait until the operator has done it, showing its progress.")
	cmd.Flags().DurationVar(&wf.timeout, "timeout", 5*time.Minute, "How long to wait at most.")
}

// gitOpsNote is said after an edit: under GitOps the commit is the way, else the next sync undoes it.
const gitOpsNote = "If a GitOps tool (Flux, Argo CD) applies this Tenant, commit the same change, or its next sync " +
	"undoes this one."

func (c *cli) suspendCommand(suspend bool) *cobra.Command {
	var wf waitFlags
	verb, past := "resume", "resumed"
	short := "Bring a suspended tenant back online (spec.suspend: false)"
	if suspend {
		verb, past = "suspend", "suspended"
		short = "Take a tenant offline, keeping its data: the app answers its hosts with 503 (spec.suspend: true)"
	}
	cmd := &cobra.Command{
		Use:               verb + " NAME",
		Short:             short,
		Long:              short + ". It edits the Tenant, then waits until the app has been told. " + gitOpsNote,
		Example:           "  kubectl tenantry " + verb + " acme",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeTenants,
		RunE: c.onTenant(func(ctx context.Context, t *tenantryv1.Tenant, args []string) error {
			var err error
			if t.Spec.Suspend == suspend {
				_, err := fmt.Fprintf(c.out, "Tenant %s/%s is already %s.\n", t.Namespace, t.Name, past)
				return err
			}
			patch := client.MergeFrom(t.DeepCopy())
			t.Spec.Suspend = suspend
			if err := c.client.Patch(ctx, t, patch, fieldOwner); err != nil {
				return err
			}
			_, _ = fmt.Fprintf(c.out, "Tenant %s/%s: spec.suspend set to %t.\n", t.Namespace, t.Name, suspend)
			if !wf.wait {
				return nil
			}
			start := time.Now()
			if err := c.waitTenant(ctx, t, wf.timeout, verb, applied(t.Generation)); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.out, "Tenant %s/%s %s in %s.\n", t.Namespace, t.Name, past, since(start))
			return err
		}),
	}
	wf.add(cmd)
	return cmd
}

func (c *cli) resetAdminCommand() *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "reset-admin NAME",
		Short: "Give a tenant's first admin a new password (for a lost one)",
		Long: "reset-admin deletes the Secret <tenant>-admin, which holds the first admin's login. The operator then " +
			"makes a new password, sets the admin user to it and writes a new Secret; the old password stops working. " +
			"The plugin never prints the password: it says how to read it from the Secret.",
		Example:           "  kubectl tenantry reset-admin acme",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeTenants,
		RunE: c.onTenant(func(ctx context.Context, t *tenantryv1.Tenant, args []string) error {
			var err error
			name := t.Name + tenantryv1.AdminSecretSuffix
			old := &corev1.Secret{}
			if err := c.client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: name}, old); err != nil {
				if apierrors.IsNotFound(err) {
					return exit(ExitError, "Tenant %s/%s has no Secret %s yet: its first admin is still being set up "+
						"(kubectl tenantry tenant %s)", t.Namespace, t.Name, name, t.Name)
				}
				return err
			}
			err = c.client.Delete(ctx, old, client.Preconditions{UID: &old.UID})
			if client.IgnoreNotFound(err) != nil {
				return err
			}
			_, _ = fmt.Fprintf(c.out, "Tenant %s/%s: Secret %s deleted; the operator makes a new password.\n", t.Namespace, t.Name, name)
			if !wf.wait {
				return nil
			}
			start := time.Now()
			err = c.waitTenant(ctx, t, wf.timeout, "reset-admin", func(t *tenantryv1.Tenant) (bool, string, error) {
				if err := stalled(t); err != nil {
					return false, "", err
				}
				s := &corev1.Secret{}
				err := c.client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: name}, s)
				switch {
				case apierrors.IsNotFound(err):
					return false, "waiting for the operator to set a new password", nil
				case err != nil:
					return false, "", err
				case s.UID == old.UID:
					return false, "waiting for the old Secret to go", nil
				case !metav1.IsControlledBy(s, t):
					// Made by someone else (a GitOps tool, a person): the operator keeps a Secret it
					// finds once the admin is confirmed, and the admin's password did not change.
					return false, "", exit(ExitError, "a Secret %s appeared that the operator did not write (it is not "+
						"controlled by Tenant %s): the admin's password did not change. Stop whatever writes it, then "+
						"run reset-admin again", name, t.Name)
				}
				return true, "", nil
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.out, "Tenant %s/%s: the first admin has a new password, in Secret %s (after %s). Read it with:\n"+
				"  kubectl get secret %s -n %s -o jsonpath='{.data.password}' | base64 -d\n",
				t.Namespace, t.Name, name, since(start), name, t.Namespace)
			return err
		}),
	}
	wf.add(cmd)
	return cmd
}

func (c *cli) moveCommand() *cobra.Command {
	var wf waitFlags
	var to string
	cmd := &cobra.Command{
		Use:   "move NAME --to SHARD",
		Short: "Move a tenant to another shard of its ExpenseApp, online (spec.shard)",
		Long: "move sets the Tenant's spec.shard. The operator copies the schema to the shard while the tenant keeps " +
			"serving, then cuts over: writes pause for about a second (docs/sharding.md). The plugin waits until the " +
			"tenant is served from the new shard, showing the move's progress. " + gitOpsNote,
		Example:           "  kubectl tenantry move acme --to east",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeTenants,
		RunE: c.onTenant(func(ctx context.Context, t *tenantryv1.Tenant, args []string) error {
			shards, err := c.shardsOf(ctx, t)
			if err != nil {
				return err
			}
			if !slices.Contains(shards, to) {
				return exit(ExitUsage, "ExpenseApp %s has no shard %q; its shards are: %s", t.Spec.AppRef.Name, to,
					strings.Join(shards, ", "))
			}
			if placed(t) == to && (t.Spec.Shard == to || t.Spec.Shard == "" && to == tenantryv1.HomeShard) {
				_, err := fmt.Fprintf(c.out, "Tenant %s/%s is on shard %s already.\n", t.Namespace, t.Name, to)
				return err
			}
			from := orDash(placed(t))
			if t.Spec.Shard != to {
				patch := client.MergeFrom(t.DeepCopy())
				t.Spec.Shard = to
				if err := c.client.Patch(ctx, t, patch, fieldOwner); err != nil {
					return err
				}
			}
			_, _ = fmt.Fprintf(c.out, "Tenant %s/%s: spec.shard set to %s (from %s).\n", t.Namespace, t.Name, to, from)
			if !wf.wait {
				return nil
			}
			start := time.Now()
			gen := t.Generation
			err = c.waitTenant(ctx, t, wf.timeout, "move", func(t *tenantryv1.Tenant) (bool, string, error) {
				if err := stalled(t); err != nil { // a move that failed was undone, and says why
					return false, "", err
				}
				// A Moving condition of an earlier generation is an earlier move's.
				if mv := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving); mv != nil && mv.ObservedGeneration >= gen {
					if mv.Status == metav1.ConditionFalse {
						return false, "", exit(ExitError, "the move to %s did not go through (%s): %s", to, mv.Reason, mv.Message)
					}
					return false, mv.Message, nil
				}
				if placed(t) != to {
					return false, "waiting for the move to start", nil
				}
				return applied(gen)(t)
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.out, "Tenant %s/%s moved from %s to %s in %s.\n", t.Namespace, t.Name, from, to, since(start))
			return err
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "The shard to move to (\"home\" is the ExpenseApp's spec.database).")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.RegisterFlagCompletionFunc("to", func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		t, err := c.tenant(cmd.Context(), args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		shards, err := c.shardsOf(cmd.Context(), t)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		return shards, cobra.ShellCompDirectiveNoFileComp
	})
	wf.add(cmd)
	return cmd
}

// placed is the shard that holds the tenant's schema: status.shard, or home for a tenant provisioned
// before shards were recorded; "" while it has no schema.
func placed(t *tenantryv1.Tenant) string {
	if t.Status.Shard == "" && t.Status.Schema != "" {
		return tenantryv1.HomeShard
	}
	return t.Status.Shard
}

// shardsOf lists the shards of a tenant's ExpenseApp, home first.
func (c *cli) shardsOf(ctx context.Context, t *tenantryv1.Tenant) ([]string, error) {
	app := &tenantryv1.ExpenseApp{}
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, app); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, exit(ExitNotFound, "Tenant %s names ExpenseApp %s, which does not exist", t.Name, t.Spec.AppRef.Name)
		}
		return nil, err
	}
	shards := []string{tenantryv1.HomeShard}
	for _, s := range app.Spec.Shards {
		shards = append(shards, s.Name)
	}
	return shards, nil
}

// check says whether what a command waits for is done, else how far it got (a line for the progress
// display), or that it cannot be done.
type check func(t *tenantryv1.Tenant) (done bool, progress string, err error)

// applied is done once the operator has acted on generation gen of the Tenant and it is Ready.
func applied(gen int64) check {
	return func(t *tenantryv1.Tenant) (bool, string, error) {
		if err := stalled(t); err != nil {
			return false, "", err
		}
		if t.Status.ObservedGeneration < gen {
			return false, "waiting for the operator", nil
		}
		ready := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady)
		if ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration >= gen {
			return true, "", nil
		}
		if r := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReconciling); r != nil &&
			r.Status == metav1.ConditionTrue {
			return false, r.Message, nil
		}
		if ready != nil {
			return false, ready.Message, nil
		}
		return false, "waiting for the operator", nil
	}
}

// stalled fails a wait on a tenant that stalled: it needs a person, and waiting longer changes nothing.
func stalled(t *tenantryv1.Tenant) error {
	if s := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionStalled); s != nil &&
		s.Status == metav1.ConditionTrue && s.ObservedGeneration >= t.Generation {
		return exit(ExitError, "Tenant %s/%s stalled (%s): %s", t.Namespace, t.Name, s.Reason, s.Message)
	}
	return nil
}

// pollEvery is how often a wait reads the Tenant again.
const pollEvery = 250 * time.Millisecond

// waitTenant reads the Tenant until done says so, showing each new progress line on standard error
// (rewriting one line on a terminal), for at most timeout.
func (c *cli) waitTenant(ctx context.Context, t *tenantryv1.Tenant, timeout time.Duration, what string, done check) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start, last := time.Now(), ""
	key := client.ObjectKeyFromObject(t)
	defer func() {
		if c.live && last != "" {
			_, _ = fmt.Fprint(c.errOut, "\r\x1b[K")
		}
	}()
	for {
		cur := &tenantryv1.Tenant{}
		switch err := c.client.Get(ctx, key, cur); {
		case apierrors.IsNotFound(err):
			return exit(ExitNotFound, "Tenant %s/%s was deleted while the plugin waited", t.Namespace, t.Name)
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return err
		case err == nil && cur.UID != t.UID:
			return exit(ExitError, "Tenant %s/%s was deleted and created again while the plugin waited", t.Namespace, t.Name)
		case err == nil:
			ok, progress, err := done(cur)
			if ok || err != nil {
				return err
			}
			if progress != last {
				if c.live {
					_, _ = fmt.Fprintf(c.errOut, "\r\x1b[K%s: %s (%s)", what, oneLine(progress), since(start))
				} else {
					_, _ = fmt.Fprintf(c.errOut, "%s: %s\n", what, oneLine(progress))
				}
				last = progress
			}
		} // any other error (a timeout, the API server restarting): read again
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return exit(ExitError, "gave up waiting after %s (--timeout); the operator goes on: kubectl tenantry tenant %s -n %s "+
					"shows where it stands. Last seen: %s", timeout, t.Name, t.Namespace, orDash(last))
			}
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}
