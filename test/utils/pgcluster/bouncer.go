package pgcluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tenantry.dev/tenantry/app/postgres"
)

// Bouncer is a PgBouncer in transaction pooling mode in front of a cluster: the setup the app must be
// safe behind, since consecutive transactions of one client may run on different server connections.
type Bouncer struct {
	Port int
	dir  string
	cmd  *exec.Cmd
}

// StartBouncer starts PgBouncer (Debian package pgbouncer) on a free port in front of the PostgreSQL
// server at backendPort, admitting the given users without a password, with poolSize server
// connections per user and database.
func StartBouncer(backendPort int, users []string, poolSize int) (*Bouncer, error) {
	logins := map[string]string{}
	for _, u := range users {
		logins[u] = ""
	}
	return StartBouncerFor(backendPort, logins, poolSize)
}

// StartBouncerFor is StartBouncer for users with passwords (user name to password), which PgBouncer
// uses to log in to a server that asks for them; clients still log in to it without one.
func StartBouncerFor(backendPort int, users map[string]string, poolSize int) (*Bouncer, error) {
	return BouncerConfig{BackendPort: backendPort, Users: users, PoolSize: poolSize}.Start()
}

// BouncerConfig is a PgBouncer's configuration: StartBouncerFor's, and the aliases the app's pool
// shards connect to (postgres.Options.PoolDatabases).
type BouncerConfig struct {
	BackendPort int
	Users       map[string]string // user name to password
	PoolSize    int               // server connections per user and database
	// PoolShards gives each database named here that many aliases (postgres.PoolDatabase), each a pool
	// of its own of PoolSize/n server connections (at least one).
	PoolShards map[string]int
}

// Log is what PgBouncer has logged so far (its server connections, by database and user, among it).
func (b *Bouncer) Log() string {
	log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	return string(log)
}

// Start starts the PgBouncer.
func (c BouncerConfig) Start() (*Bouncer, error) {
	backendPort, users, poolSize := c.BackendPort, c.Users, c.PoolSize
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/pgbouncer"); err2 != nil {
			return nil, errors.New("pgbouncer not found: apt-get install pgbouncer")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "tenantry-pgbouncer-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	b := &Bouncer{Port: port, dir: dir}
	var userlist strings.Builder
	for u, pass := range users {
		fmt.Fprintf(&userlist, "%q %q\n", u, pass)
	}
	var aliases strings.Builder
	for database, n := range c.PoolShards {
		for i := range n {
			fmt.Fprintf(&aliases, "%s = host=127.0.0.1 port=%d dbname=%s pool_size=%d\n", postgres.PoolDatabase(database, i),
				backendPort, database, max(1, poolSize/n))
		}
	}
	ini := fmt.Sprintf(`[databases]
%s* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,application_name
logfile = %s
`, aliases.String(), backendPort, port, filepath.Join(dir, "userlist.txt"), poolSize, filepath.Join(dir, "pgbouncer.log"))
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist.String()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		return nil, err
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		pgUser, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New(`running as root, but there is no "postgres" user to run PgBouncer as`)
		}
		uid, _ := strconv.Atoi(pgUser.Uid)
		gid, _ := strconv.Atoi(pgUser.Gid)
		_ = os.Chown(dir, uid, gid)
		_ = os.Chmod(dir, 0o755)
		b.cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	} else {
		b.cmd = exec.Command(bin, args...)
	}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting pgbouncer: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			b.Stop()
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			return nil, fmt.Errorf("pgbouncer did not listen on %d: %s", port, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops PgBouncer and removes its files.
func (b *Bouncer) Stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		_ = exec.Command("pkill", "-TERM", "-f", filepath.Join(b.dir, "pgbouncer.ini")).Run()
		_ = b.cmd.Process.Kill()
		_, _ = b.cmd.Process.Wait()
	}
	_ = os.RemoveAll(b.dir)
}
