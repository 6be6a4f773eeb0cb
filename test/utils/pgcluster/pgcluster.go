// Package pgcluster runs a private PostgreSQL cluster from the server binaries on the machine: initdb
// into a directory, then pg_ctl on a free loopback port. Tests use it for a throwaway cluster and
// `make dev` for a lasting one under .dev/. PostgreSQL refuses to run as root, so as root the binaries
// run as the "postgres" user on a directory it owns.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the cluster's superuser, who logs in over loopback without a password.
const Superuser = "postgres"

// Cluster is a PostgreSQL cluster in a directory of its own.
type Cluster struct {
	// Dir holds data/, the server log and the socket.
	Dir string
	// Port is the loopback TCP port the server listens on.
	Port int

	bin    string
	runAs  *user.User // nil: run as the current user
	extras []string
}

// Options tune a cluster.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Durable keeps fsync on. Throwaway test clusters turn it off: nothing there must survive a crash.
	Durable bool
	// Settings are more server settings, as "name=value" (e.g. shared_preload_libraries=citus).
	Settings []string
	// HBA, when set, replaces pg_hba.conf (written at initdb).
	HBA string
}

// BinDir finds the directory of initdb and pg_ctl: $TENANTRY_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin, else the directory of initdb on PATH.
func BinDir() (string, error) {
	if d := os.Getenv("TENANTRY_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("TENANTRY_PG_BIN=%s holds no initdb: point it at PostgreSQL's server binaries", d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql) " +
		"or set TENANTRY_PG_BIN to the directory holding initdb and pg_ctl")
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// New returns the cluster in dir, creating it with initdb when dir/data does not exist yet.
func New(dir string, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	c := &Cluster{Dir: dir, Port: opts.Port, bin: bin}
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			return nil, errors.New(`running as root, but there is no "postgres" user to run PostgreSQL as`)
		}
		if err := c.chown(dir); err != nil {
			return nil, err
		}
	}
	if !opts.Durable {
		c.extras = []string{"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"}
	}
	for _, setting := range opts.Settings {
		c.extras = append(c.extras, "-c", setting)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		out, err := c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", Superuser, "--auth=trust",
			"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
		if err != nil {
			return nil, fmt.Errorf("initdb in %s: %w\n%s", dir, err, out)
		}
		if opts.HBA != "" {
			hba := filepath.Join(dir, "data", "pg_hba.conf")
			if err := os.WriteFile(hba, []byte(opts.HBA), 0o600); err != nil {
				return nil, err
			}
			if c.runAs != nil {
				uid, _ := strconv.Atoi(c.runAs.Uid)
				gid, _ := strconv.Atoi(c.runAs.Gid)
				if err := os.Lchown(hba, uid, gid); err != nil {
					return nil, err
				}
			}
		}
	}
	return c, nil
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	if c.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return err
		}
		c.Port = p
	}
	opts := append([]string{
		"-p", strconv.Itoa(c.Port), "-k", c.Dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=500", "-c", "shared_buffers=256MB",
		// Logical replication moves tenants between shards (a copy per move, and a slot).
		"-c", "wal_level=logical", "-c", "max_replication_slots=20", "-c", "max_wal_senders=20",
		"-c", "max_logical_replication_workers=20", "-c", "max_worker_processes=32",
	}, c.extras...)
	out, err := c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-l", filepath.Join(c.Dir, "server.log"),
		"-w", "-t", "60", "-o", strings.Join(opts, " "), "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		return fmt.Errorf("starting PostgreSQL on port %d: %w\n%s\n%s", c.Port, err, out, tail(string(log), 2000))
	}
	return nil
}

// Stop stops the server (fast shutdown: open sessions are ended).
func (c *Cluster) Stop() error {
	out, err := c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-w", "-m", "fast", "stop")
	if err != nil {
		return fmt.Errorf("stopping PostgreSQL: %w\n%s", err, out)
	}
	return nil
}

// Running reports whether the server of this directory is up.
func (c *Cluster) Running() bool {
	_, err := c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "status")
	return err == nil
}

// URL is the superuser's connection string for a database of the cluster.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.Port, database)
}

// CreateDatabase creates a database and returns the superuser's connection string for it.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	return CreateDatabase(ctx, c.URL("postgres"), name)
}

// CreateDatabase creates a database on the server that adminURL reaches and returns adminURL with its
// database replaced by the new one.
func CreateDatabase(ctx context.Context, adminURL, name string) (string, error) {
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return "", fmt.Errorf("parsing %q: %w", adminURL, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("connecting to create database %q: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %q: %w", name, err)
	}
	return replaceDatabase(adminURL, name), nil
}

func replaceDatabase(u, db string) string {
	base, query, _ := strings.Cut(u, "?")
	if i := strings.Index(base, "://"); i >= 0 {
		if j := strings.Index(base[i+3:], "/"); j >= 0 {
			base = base[:i+3+j]
		}
	}
	out := base + "/" + db
	if query != "" {
		out += "?" + query
	}
	return out
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady waits until the server accepts a connection or ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for PostgreSQL on port %d: %w", c.Port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.Dir
	return cmd.CombinedOutput()
}

func (c *Cluster) chown(dir string) error {
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	// The postgres user must also be able to reach dir: make its parents traversable.
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(p, st.Mode().Perm()|0o011)
		}
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
