package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
)

// tenantName is what a tenant's schema and role names look like (registry.TenantName, and the names of
// older releases): nothing but such a name reaches psql's startup options.
var tenantName = regexp.MustCompile(`^tenant_[a-z0-9_]{1,56}$`)

// supportSettings are the settings every psql session of the plugin starts with, besides role,
// search_path and read-only: a query of the support engineer's waits at most 3 s for a lock (rather than
// queue a migration behind it), and a transaction left open ends after 5 minutes.
const supportSettings = " -c lock_timeout=3s -c idle_in_transaction_session_timeout=5min"

func (c *cli) psqlCommand() *cobra.Command {
	var write bool
	psql := "psql"
	cmd := &cobra.Command{
		Use:   "psql NAME [-- PSQL ARGS...]",
		Short: "Open psql in a tenant's schema, as the app's login switched to the tenant's role, read-only",
		Long: "psql connects as the ExpenseApp's own database login (from its Secret <app>-app-db, which you must be " +
			"allowed to read). It looks the tenant up in the app's registry, and connects to the shard that holds its " +
			"schema, switched to the tenant's role with its schema on the search path: it sees what the app sees for " +
			"that tenant. Transactions are read-only unless --write. It says where it connects, as whom, before " +
			"connecting. Arguments after -- go to psql (e.g. -c 'SELECT ...').\n\nIt never uses the admin credential " +
			"of the database. Read-only guards against mistakes, not against the user: the app's login may act as " +
			"any tenant of the app (SET ROLE), and whoever may read its Secret may do what it may.",
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
		RunE: c.onTenant(func(ctx context.Context, t *tenantryv1.Tenant, args []string) error {
			path, err := exec.LookPath(psql)
			if err != nil {
				return exit(ExitError, "psql is not on the PATH: install the PostgreSQL client, or name it with --psql-path")
			}
			logins, err := c.appLogins(ctx, t)
			if err != nil {
				return err
			}
			// Nothing of the user's own libpq environment (a service file, a password file, a host)
			// joins a connection the Secret describes, and no variable of theirs changes where it goes.
			unsetPGEnv()
			home, err := logins.conn(tenantryv1.HomeShard)
			if err != nil {
				return err
			}
			row, err := lookUp(ctx, home, t)
			if err != nil {
				return err
			}
			shard := registry.ShardName(row.shard)
			target, err := logins.conn(shard)
			if err != nil {
				return err
			}
			if t.Status.Schema != "" && t.Status.Schema != row.schema {
				_, _ = fmt.Fprintf(c.errOut, "%s: status.schema says %s, the registry %s: the registry is what counts.\n",
					c.paint("yellow", "warning"), esc(t.Status.Schema), row.schema)
			}
			if d := t.Status.Drift; d != nil && d.Planted > 0 {
				_, _ = fmt.Fprintf(c.errOut, "%s: the schema holds %d planted object(s) of code (kubectl tenantry drift): "+
					"they run as the session's role when a query uses them.\n", c.paint("red", "warning"), d.Planted)
			}
			mode, readOnly := "read-only (--write to change data)", "on"
			if write {
				mode, readOnly = c.paint("red", "WRITES ON: what you change, the customer sees"), "off"
			}
			_, _ = fmt.Fprintf(c.errOut, "Connecting to tenant %s/%s: schema %s on shard %s (%s), as the app's login %s "+
				"switched to role %s; %s.\n", t.Namespace, t.Name, row.schema, shard, target.where(), target.user, row.role, mode)
			run := exec.Command(path, append([]string{"--dbname", target.url()}, args[1:]...)...)
			run.Stdin, run.Stdout, run.Stderr = c.in, c.out, c.errOut
			// Startup parameters: set again on psql's reconnects, and what RESET goes back to.
			run.Env = append(os.Environ(), "PGPASSWORD="+target.password, "PGAPPNAME=kubectl-tenantry",
				"PGPASSFILE="+os.DevNull, "PGOPTIONS=-c default_transaction_read_only="+readOnly+" -c role="+row.role+
					" -c search_path="+row.schema+",pg_temp"+supportSettings)
			if err := run.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exit(ExitError, "psql exited with status %d", ee.ExitCode())
				}
				return err
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&write, "write", false, "Allow changes: transactions are read-only without it.")
	cmd.Flags().StringVar(&psql, "psql-path", psql, "The psql program to run.")
	return cmd
}

// appLogins are the app's connection strings, by shard, from its Secret.
type appLogins struct {
	secret string
	uris   map[string]string
}

// appLogins reads the Secret of the app of a tenant.
func (c *cli) appLogins(ctx context.Context, t *tenantryv1.Tenant) (*appLogins, error) {
	app := &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}}
	secret := &corev1.Secret{}
	err := c.client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: app.AppSecretName()}, secret)
	switch {
	case apierrors.IsForbidden(err):
		return nil, &exitError{code: ExitForbidden, err: fmt.Errorf("psql connects as the app's login, in Secret %s, "+
			"which you may not read: %w", app.AppSecretName(), err)}
	case apierrors.IsNotFound(err):
		return nil, exit(ExitNotFound, "ExpenseApp %s has no Secret %s: its database is not ready (kubectl tenantry status)",
			app.Name, app.AppSecretName())
	case err != nil:
		return nil, err
	}
	return &appLogins{secret: secret.Name, uris: tenantryv1.AppLoginURIs(secret.Data)}, nil
}

// conn is the app's login on a shard, as a connection that takes nothing from the Secret but a server,
// a database, a user, a password and sslmode.
func (l *appLogins) conn(shard string) (*login, error) {
	lg, err := parseLogin(l.uris[shard])
	if err != nil {
		return nil, exit(ExitError, "Secret %s holds no usable connection string for shard %s: %v", l.secret, shard, err)
	}
	return lg, nil
}

// login is one connection of the app's login.
type login struct {
	host, port, database, user, password, sslmode string
}

// sslModes are the sslmode values a login may ask for.
var sslModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true,
	"verify-full": true}

// parseLogin reads a postgres:// connection string of one server, keeping only what a login needs: its
// server, database, user, password and sslmode. Every other parameter (a host address, a service, a
// password file, client keys, options) is dropped, and a list of servers or a socket directory refused,
// so that a Secret edited by someone else cannot make psql send the user's own credentials elsewhere,
// or set anything on the session.
func parseLogin(raw string) (*login, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.User == nil || u.Host == "" {
		return nil, errors.New("not a postgres:// URL with a user and a server")
	}
	lg := &login{user: u.User.Username(), database: strings.TrimPrefix(u.Path, "/"), port: "5432",
		sslmode: u.Query().Get("sslmode")}
	lg.password, _ = u.User.Password()
	if lg.host = u.Hostname(); u.Port() != "" {
		lg.port = u.Port()
	}
	switch {
	case lg.user == "" || lg.password == "" || lg.database == "":
		return nil, errors.New("it lacks a user, a password or a database")
	case strings.ContainsAny(lg.host, ",/") || net.ParseIP(lg.host) == nil && !hostname.MatchString(lg.host):
		return nil, fmt.Errorf("%q is not one server's name or address", lg.host)
	case lg.sslmode != "" && !sslModes[lg.sslmode]:
		return nil, fmt.Errorf("sslmode %q is not one of PostgreSQL's", lg.sslmode)
	}
	return lg, nil
}

// hostname is a DNS name.
var hostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// url is the login as psql takes it, without its password (given in the environment, where other users'
// ps does not show it).
func (l *login) url() string {
	q := url.Values{"connect_timeout": {"10"}}
	if l.sslmode != "" {
		q.Set("sslmode", l.sslmode)
	}
	u := url.URL{Scheme: "postgres", User: url.User(l.user), Host: net.JoinHostPort(l.host, l.port), Path: "/" + l.database,
		RawQuery: q.Encode()}
	return u.String()
}

// where is the server and database, for people.
func (l *login) where() string { return net.JoinHostPort(l.host, l.port) + "/" + l.database }

// registryRow is what the home database's registry says of a tenant.
type registryRow struct{ schema, role, shard string }

// lookUp reads the tenant's schema, role and shard from the registry of its app's home database, as the
// app's login (which reads its own tenants' rows only): the Tenant's status says the same, but anyone
// who may write a status could make it name another tenant of the app.
func lookUp(ctx context.Context, home *login, t *tenantryv1.Tenant) (*registryRow, error) {
	cfg, err := pgx.ParseConfig(home.url())
	if err != nil {
		return nil, err
	}
	cfg.Password = home.password
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, exit(ExitError, "connecting to the app's home database %s as %s: %v", home.where(), home.user, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	row := &registryRow{}
	err = conn.QueryRow(ctx, `SELECT schema_name, role_name, shard FROM tenantry.tenants WHERE namespace = $1 AND name = $2`,
		t.Namespace, t.Name).Scan(&row.schema, &row.role, &row.shard)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, exit(ExitNotFound, "the registry of ExpenseApp %s has no live tenant %s/%s: it is not provisioned yet, "+
			"or retained (kubectl tenantry tenant %s)", t.Spec.AppRef.Name, t.Namespace, t.Name, t.Name)
	case err != nil:
		return nil, exit(ExitError, "reading the registry of ExpenseApp %s: %v", t.Spec.AppRef.Name, err)
	case !tenantName.MatchString(row.schema) || !tenantName.MatchString(row.role):
		return nil, exit(ExitError, "the registry names schema %q and role %q for %s/%s, which the plugin does not pass to psql",
			row.schema, row.role, t.Namespace, t.Name)
	}
	return row, nil
}

// unsetPGEnv removes libpq's environment variables from the plugin's own, and so from psql's.
func unsetPGEnv() {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "PG") {
			_ = os.Unsetenv(name)
		}
	}
}
