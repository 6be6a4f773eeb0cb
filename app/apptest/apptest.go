// Package apptest sets up tenants for the app's tests exactly as the operator does: through
// internal/tenantdb, on a real PostgreSQL database, with the app connecting as its own least-privilege
// login role.
package apptest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"

	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// Namespace is the namespace of every test tenant and app.
const Namespace = "test"

// Env is a database with a registry and an app login role.
type Env struct {
	AdminURL string // superuser: what the operator has
	AppURL   string // the app's login role
	AppRole  string
	Channel  string // the app's announcement channel, recorded as the operator records it
	Admin    *tenantdb.DB
}

var seq atomic.Int64

// NewEnv creates a database on the cluster, its registry and an app role that owns nothing.
func NewEnv(ctx context.Context, cluster *pgcluster.Throwaway) (*Env, error) {
	adminURL, err := cluster.NewDatabase(ctx, "app")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, err
	}
	database := strings.TrimPrefix(u.Path, "/")
	e := &Env{AdminURL: adminURL, AppRole: registry.AppRoleName(database, Namespace, "app"),
		Channel: fmt.Sprintf("%sapptest_%s_%d", registry.ChannelPrefix, database, seq.Add(1))}
	u.User = url.UserPassword(e.AppRole, "app-password")
	e.AppURL = u.String()
	// As the operator: admin work on the admin's login, work inside tenant schemas on its tenant login.
	role := tenantdb.Role{Name: e.AppRole, Mark: tenantdb.OwnerMark("app", database, Namespace, "app")}
	worker := tenantdb.Role{Name: registry.WorkerRoleName(database, Namespace, "app"),
		Mark: tenantdb.OwnerMark("operator", database, Namespace, "app")}
	if e.Admin, err = tenantdb.Open(adminURL, tenantdb.Options{AppRole: role, Worker: worker}); err != nil {
		return nil, err
	}
	if err := e.Admin.EnsureAppRole(ctx, role, "app-password"); err != nil {
		return nil, err
	}
	if err := e.Admin.SetAppChannel(ctx, Namespace, "app", e.Channel); err != nil {
		return nil, err
	}
	return e, nil
}

// Close closes the operator-side connections.
func (e *Env) Close() { e.Admin.Close() }

// Tenant is what a test provisions.
type Tenant struct {
	Name          string
	Hosts         []string
	DisplayName   string
	Currency      string
	Threshold     *int64
	PrimaryColor  string
	AdminEmail    string
	AdminPassword string
	State         string // default active
}

// Provisioned is a provisioned tenant.
type Provisioned struct {
	Tenant
	Schema string
}

// Provision registers a tenant, creates its schema and role, migrates it, creates its admin and lets
// the app role act as it: what the Tenant reconciler does.
func (e *Env) Provision(ctx context.Context, t Tenant) (*Provisioned, error) {
	if t.Name == "" {
		t.Name = fmt.Sprintf("t%d", seq.Add(1))
	}
	if t.DisplayName == "" {
		t.DisplayName = strings.ToUpper(t.Name[:1]) + t.Name[1:] + " Ltd"
	}
	if t.AdminEmail == "" {
		t.AdminEmail = "admin@" + t.Name + ".test"
	}
	if t.AdminPassword == "" {
		t.AdminPassword = "password-of-" + t.Name
	}
	if t.State == "" {
		t.State = registry.StateActive
	}
	db := e.Admin.Database()
	name := registry.TenantName(db, Namespace, t.Name)
	reg := tenantdb.Registration{
		Schema: name, Role: name, Namespace: Namespace, Name: t.Name, UID: t.Name, DisplayName: t.DisplayName,
		Branding: registry.Branding{PrimaryColor: t.PrimaryColor},
		Settings: registry.Settings{Currency: t.Currency, ApprovalThreshold: t.Threshold},
		State:    registry.StateProvisioning, Hosts: t.Hosts, App: "app",
	}
	id, err := e.Admin.Register(ctx, reg)
	if err != nil {
		return nil, err
	}
	schema := id.Schema
	role := tenantdb.Role{Name: id.Role, Mark: tenantdb.OwnerMark("tenant", db, Namespace, t.Name)}
	if err := e.Admin.EnsureSchema(ctx, schema, role); err != nil {
		return nil, err
	}
	if err := e.Admin.GrantTenant(ctx, id.Role, e.AppRole); err != nil {
		return nil, err
	}
	session, err := e.Admin.Session(ctx, id.Identity)
	if err != nil {
		return nil, err
	}
	version, err := session.Migrate(ctx, migrations.FS(), "apptest")
	if err != nil {
		return nil, err
	}
	hash, err := password.Hash(t.AdminPassword)
	if err != nil {
		return nil, err
	}
	if _, err := session.EnsureAdmin(ctx, t.AdminEmail, hash); err != nil {
		return nil, err
	}
	if err := e.Admin.SetState(ctx, schema, t.State, version); err != nil {
		return nil, err
	}
	return &Provisioned{Tenant: t, Schema: schema}, nil
}
