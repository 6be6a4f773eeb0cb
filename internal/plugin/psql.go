package plugin

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// tenantSchema is what a tenant's schema (and role) name looks like (registry.TenantName); a
// status.schema that does not look so is refused, so nothing but a name reaches psql's options.
var tenantSchema = regexp.MustCompile(`^tenant_[a-z0-9_]{1,56}$`)

func (c *cli) psqlCommand() *cobra.Command {
	var write bool
	psql := "psql"
	cmd := &cobra.Command{
		Use:   "psql NAME [-- PSQL ARGS...]",
		Short: "Open psql in a tenant's schema, as the app's login switched to the tenant's role, read-only",
		Long: "psql connects as the ExpenseApp's own database login (from its Secret <app>-app-db, which the user must " +
			"be allowed to read) to the tenant's shard, switched to the tenant's role with the tenant's schema on the " +
			"search path: it sees what the app sees for that tenant, and nothing of another tenant or of the registry. " +
			"Transactions are read-only unless --write. It says so before connecting. Arguments after -- go to psql " +
			"(e.g. -c 'SELECT ...').\n\nIt never uses the admin credential of the database. The read-only setting " +
			"guards against mistakes, not against a user: whoever may read the app's Secret may change what the app may.",
		Example: "  kubectl tenantry psql acme\n" +
			"  kubectl tenantry psql acme -- -c 'SELECT count(*) FROM expenses'\n" +
			"  kubectl tenantry psql acme --write",
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash == 1 || dash == -1 && len(args) == 1 {
				return nil
			}
			return errors.New("requires exactly one tenant name, and psql's own arguments after --")
		},
		ValidArgsFunction: c.completeTenants,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			t, err := c.tenant(ctx, args[0])
			if err != nil {
				return err
			}
			schema := t.Status.Schema
			if !tenantSchema.MatchString(schema) {
				return exit(ExitError, "Tenant %s/%s has no schema yet (status.schema %q): kubectl tenantry tenant %s says why",
					t.Namespace, t.Name, schema, t.Name)
			}
			shard := t.Status.Shard
			if shard == "" {
				shard = tenantryv1.HomeShard
			}
			app := &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}}
			secret := &corev1.Secret{}
			err = c.client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: app.AppSecretName()}, secret)
			switch {
			case apierrors.IsForbidden(err):
				return &exitError{code: ExitForbidden, err: fmt.Errorf("psql connects as the app's login, in Secret %s, "+
					"which you may not read: %w", app.AppSecretName(), err)}
			case apierrors.IsNotFound(err):
				return exit(ExitNotFound, "ExpenseApp %s has no Secret %s: its database is not ready "+
					"(kubectl tenantry status)", app.Name, app.AppSecretName())
			case err != nil:
				return err
			}
			raw := tenantryv1.AppLoginURIs(secret.Data)[shard]
			target, pass, user, err := withoutPassword(raw)
			if err != nil {
				return exit(ExitError, "Secret %s holds no usable connection string for shard %s: %v", app.AppSecretName(), shard, err)
			}
			path, err := exec.LookPath(psql)
			if err != nil {
				return exit(ExitError, "psql is not on the PATH: install the PostgreSQL client, or name it with --psql-path")
			}
			mode := "read-only (--write to change data)"
			options := "-c default_transaction_read_only=on"
			if write {
				mode = c.paint("red", "WRITES ON: what you change, the customer sees")
				options = "-c default_transaction_read_only=off"
			}
			_, _ = fmt.Fprintf(c.errOut, "Connecting to tenant %s/%s: schema %s on shard %s, as the app's login %s "+
				"switched to role %s; %s.\n", t.Namespace, t.Name, schema, shard, user, schema, mode)
			run := exec.Command(path, append([]string{"--dbname", target}, args[1:]...)...)
			run.Stdin, run.Stdout, run.Stderr = c.in, c.out, c.errOut
			// Set at connection start, so also on psql's reconnects, and RESET goes back to them.
			run.Env = append(withoutPGOptions(os.Environ()), "PGPASSWORD="+pass, "PGAPPNAME=kubectl-tenantry",
				"PGOPTIONS="+options+" -c role="+schema+" -c search_path="+schema+",pg_temp"+
					" -c idle_in_transaction_session_timeout=15min")
			if err := run.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exit(ExitError, "psql exited with status %d", ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&write, "write", false, "Allow changes: transactions are read-only without it.")
	cmd.Flags().StringVar(&psql, "psql-path", psql, "The psql program to run.")
	return cmd
}

// withoutPassword splits a connection string into one without its password, the password (given to
// psql in its environment, where other users' ps does not show it) and the user.
func withoutPassword(raw string) (target, pass, user string, err error) {
	u, err := url.Parse(raw)
	if err != nil || raw == "" || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.User == nil {
		return "", "", "", errors.New("not a postgres:// URL with a user")
	}
	pass, _ = u.User.Password()
	user = u.User.Username()
	u.User = url.User(user)
	q := u.Query()
	q.Del("password")
	q.Del("options") // ours are the only options
	u.RawQuery = q.Encode()
	return u.String(), pass, user, nil
}

// withoutPGOptions is the environment without the settings psql would otherwise send or connect with.
func withoutPGOptions(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "PGOPTIONS=") || strings.HasPrefix(kv, "PGPASSWORD=") || strings.HasPrefix(kv, "PGSERVICE=") ||
			strings.HasPrefix(kv, "PGDATABASE=") || strings.HasPrefix(kv, "PGUSER=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
