// Package plugin is kubectl tenantry (cmd/kubectl-tenantry): the fleet's state per ExpenseApp, one
// tenant in full, drift, migrations, and the actions a platform team takes on a tenant, each an edit of
// its resources, as a GitOps user's commit would be. It reads the Kubernetes API only: the operator
// puts in status what it needs, and it never needs the admin database credential. (psql alone reads the
// app's own login, for those allowed to read its Secret.) docs/kubectl-plugin.md lists every command.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// Exit codes scripts can rely on (docs/kubectl-plugin.md).
const (
	// ExitOK: done; for drift and migrate status, nothing needs attention either.
	ExitOK = 0
	// ExitError: the command failed: the API server refused, a wait timed out, the tenant stalled.
	ExitError = 1
	// ExitUsage: the command line is wrong.
	ExitUsage = 2
	// ExitNotFound: the Tenant or ExpenseApp named does not exist.
	ExitNotFound = 3
	// ExitForbidden: the user may not read or change what the command needs.
	ExitForbidden = 4
	// ExitAttention: the command ran, and found what needs a person: drifted tenants (drift), tenants
	// behind the release or failed (migrate status), tenants not Ready (status).
	ExitAttention = 5
)

// exitError is an error with the exit code it ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exit wraps err with the exit code it ends the command with.
func exit(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// Main runs kubectl tenantry with the arguments given (without the program's name) and returns its
// exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := newCLI(stdin, stdout, stderr)
	root := c.command()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	switch {
	case errors.As(err, &ee) && ee.code == ExitAttention:
		_, _ = fmt.Fprintln(stderr, esc(err.Error())) // not an error: what needs attention, for a script's log
		return ExitAttention
	case errors.As(err, &ee): // said in the command's own words
		_, _ = fmt.Fprintln(stderr, "error:", esc(err.Error()))
		return ee.code
	}
	_, _ = fmt.Fprintln(stderr, "error:", esc(explain(err)))
	switch {
	case apierrors.IsNotFound(err):
		return ExitNotFound
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return ExitForbidden
	case isUsage(err):
		return ExitUsage
	}
	return ExitError
}

// explain says an API error in plain words: what the user may not do, and where.
func explain(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && apierrors.IsForbidden(err) {
		return fmt.Sprintf("you may not do this here: %s. Ask for a Role that grants it, or use -n for a namespace "+
			"you may use", status.Status().Message)
	}
	if apierrors.IsUnauthorized(err) {
		return "the API server does not know who you are (Unauthorized): check your kubeconfig's credentials"
	}
	return err.Error()
}

// isUsage says err is cobra's complaint about the command line.
func isUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ",
		"invalid argument", "flag needs an argument", "required flag", "bad flag syntax"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// cli is one run of the plugin: its flags, streams and API client.
type cli struct {
	flags  *genericclioptions.ConfigFlags
	all    bool
	output string
	// formats are the -o values each command takes ("json|yaml|wide").
	formats map[*cobra.Command]string
	in      io.Reader
	out     io.Writer
	errOut  io.Writer
	// color: the output is a terminal, and NO_COLOR is not set.
	color bool
	// live: standard error is a terminal, so progress rewrites one line.
	live bool

	client client.Client
}

func newCLI(in io.Reader, out, errOut io.Writer) *cli {
	c := &cli{flags: genericclioptions.NewConfigFlags(true), in: in, out: out, errOut: errOut,
		formats: map[*cobra.Command]string{}}
	c.color = isTerminal(out) && os.Getenv("NO_COLOR") == ""
	c.live = isTerminal(errOut)
	return c
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (c *cli) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-tenantry",
		Short: "Inspect and operate a Tenantry fleet: tenants, drift, migrations",
		Long: "kubectl tenantry shows a Tenantry fleet per ExpenseApp and one tenant in full, and suspends, resumes, " +
			"moves or resets a tenant by editing its resources, as a commit to them would. It reads the Kubernetes " +
			"API only.\n\nExit codes: 0 done; 1 failed; 2 wrong command line; 3 not found; 4 forbidden; 5 found " +
			"something that needs a person (drift, tenants behind or not Ready).",
		SilenceUsage:  true,
		SilenceErrors: true,
		// -o is checked before anything is read.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if formats := c.formats[cmd]; c.output != "" && !slices.Contains(strings.Split(formats, "|"), c.output) {
				return exit(ExitUsage, "unknown output format %q: %s takes %s", c.output, cmd.CommandPath(),
					strings.ReplaceAll(formats, "|", ", "))
			}
			return nil
		},
		Annotations: map[string]string{
			// kubectl's plugin convention: usage and completion say "kubectl tenantry", not the binary.
			cobra.CommandDisplayNameAnnotation: "kubectl tenantry",
		},
	}
	c.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(c.statusCommand(), c.tenantCommand(), c.driftCommand(), c.migrateCommand(),
		c.suspendCommand(true), c.suspendCommand(false), c.resetAdminCommand(), c.moveCommand(), c.psqlCommand(),
		c.versionCommand())
	return root
}

// listFlags are -A and -o, for the commands that list.
func (c *cli) listFlags(cmd *cobra.Command, formats string) {
	cmd.Flags().BoolVarP(&c.all, "all-namespaces", "A", false, "Every namespace the user may read.")
	c.outputFlag(cmd, formats)
}

// outputFlag is -o.
func (c *cli) outputFlag(cmd *cobra.Command, formats string) {
	c.formats[cmd] = formats
	cmd.Flags().StringVarP(&c.output, "output", "o", "", "Output format: "+formats+" (default: a text report).")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return strings.Split(formats, "|"), cobra.ShellCompDirectiveNoFileComp
	})
}

// scheme is the kinds the plugin reads: Kubernetes' own and Tenantry's.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tenantryv1.AddToScheme(s))
	return s
}

// kube is the API client, made on first use from the kubeconfig flags.
func (c *cli) kube() (client.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-tenantry"
	c.client, err = client.New(cfg, client.Options{Scheme: scheme()})
	return c.client, err
}

// namespace is the namespace the command works in: -n, or the kubeconfig context's.
func (c *cli) namespace() (string, error) {
	ns, _, err := c.flags.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// scope is the namespace to list in: "" with -A.
func (c *cli) scope() (string, error) {
	if c.all {
		return "", nil
	}
	return c.namespace()
}

// listPage is how many objects one list request asks for: 10,000 Tenants are read in 20 requests, none
// of them large.
const listPage = 500

// tenants lists the Tenants of namespace ns ("" for all), page by page.
func (c *cli) tenants(ctx context.Context, ns string) ([]tenantryv1.Tenant, error) {
	k, err := c.kube()
	if err != nil {
		return nil, err
	}
	var all []tenantryv1.Tenant
	opts := []client.ListOption{client.Limit(listPage)}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	for cont := ""; ; {
		var page tenantryv1.TenantList
		if err := k.List(ctx, &page, append(opts, client.Continue(cont))...); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if cont = page.Continue; cont == "" {
			break
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Namespace != all[j].Namespace {
			return all[i].Namespace < all[j].Namespace
		}
		return all[i].Name < all[j].Name
	})
	return all, nil
}

// apps lists the ExpenseApps of namespace ns ("" for all).
func (c *cli) apps(ctx context.Context, ns string) ([]tenantryv1.ExpenseApp, error) {
	k, err := c.kube()
	if err != nil {
		return nil, err
	}
	var list tenantryv1.ExpenseAppList
	if err := k.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	return list.Items, nil
}

// fleet reads the ExpenseApps and Tenants of the namespace (every namespace with -A), and says which
// namespace that is ("" for all).
func (c *cli) fleet(ctx context.Context) (string, []tenantryv1.ExpenseApp, []tenantryv1.Tenant, error) {
	ns, err := c.scope()
	if err != nil {
		return "", nil, nil, err
	}
	apps, err := c.apps(ctx, ns)
	if err != nil {
		return "", nil, nil, err
	}
	tenants, err := c.tenants(ctx, ns)
	return ns, apps, tenants, err
}

// tenant reads one Tenant of the namespace.
func (c *cli) tenant(ctx context.Context, name string) (*tenantryv1.Tenant, error) {
	k, err := c.kube()
	if err != nil {
		return nil, err
	}
	ns, err := c.namespace()
	if err != nil {
		return nil, err
	}
	t := &tenantryv1.Tenant{}
	if err := k.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, t); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, exit(ExitNotFound, "no Tenant %q in namespace %s (kubectl tenantry status -n %s lists them)", name, ns, ns)
		}
		return nil, err
	}
	return t, nil
}

// onTenant is the RunE of a command on one tenant (its first argument): it reads the Tenant of the
// namespace (exit 3 when there is none), then runs the command on it.
func (c *cli) onTenant(run func(ctx context.Context, t *tenantryv1.Tenant, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		t, err := c.tenant(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return run(cmd.Context(), t, args)
	}
}

// completeTenants completes a Tenant name of the namespace.
func (c *cli) completeTenants(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ns, err := c.namespace()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	list, err := c.tenants(cmd.Context(), ns)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	names := make([]string, 0, len(list))
	for _, t := range list {
		names = append(names, t.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// print writes v (a pointer to a report) as JSON or YAML when -o asks for it, and reports whether it
// did. When it did not, it escapes every string of the report for the terminal (escapeAll).
func (c *cli) print(v any) (bool, error) {
	switch c.output {
	case "json":
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "    ")
		enc.SetEscapeHTML(false)
		return true, enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = c.out.Write(b)
		return true, err
	}
	escapeAll(v)
	return false, nil // the text report; -o wide widens some of its tables
}

// table is a tab-aligned table on the command's output.
func (c *cli) table() *tabwriter.Writer { return tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0) }

// paint colours s when the output is a terminal.
func (c *cli) paint(colour, s string) string {
	if !c.color || s == "" {
		return s
	}
	codes := map[string]string{"red": "31", "yellow": "33", "green": "32", "bold": "1", "faint": "2"}
	return "\x1b[" + codes[colour] + "m" + s + "\x1b[0m"
}

// versionCommand prints the plugin's build.
func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(c.out, "kubectl-tenantry %s (API %s)\n", Version, tenantryv1.GroupVersion)
			return err
		},
	}
}

// Version is the plugin's version, set at build time (-ldflags "-X ...plugin.Version=v1.2.3").
var Version = "dev"

// age says how long ago t was, as kubectl does.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// size says a size in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
