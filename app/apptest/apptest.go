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
	"tenantry.dev/tenantry/app/password"
	"tenantry.dev/tenantry/internal/pgcluster"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Env is a database with a registry and an app login role.
type Env struct {
	AdminURL string // superuser: what the operator has
	AppURL   string // the app's login role
	AppRole  string
	Admin    *tenantdb.DB
}

var seq atomic.Int64

// NewEnv creates a database on the cluster, its registry and an app role that owns nothing.
func NewEnv(ctx context.Context, cluster *pgcluster.Throwaway) (*Env, error) {
	adminURL, err := cluster.NewDatabase(ctx, "app")
	if err != nil {
		return nil, err
	}
	e := &Env{AdminURL: adminURL}
	if e.Admin, err = tenantdb.Open(adminURL, tenantdb.Options{}); err != nil {
		return nil, err
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, err
	}
	e.AppRole = "app_" + strings.TrimPrefix(u.Path, "/")
	if err := e.Admin.EnsureAppRole(ctx, e.AppRole, "app-password"); err != nil {
		return nil, err
	}
	u.User = url.UserPassword(e.AppRole, "app-password")
	e.AppURL = u.String()
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
		t.State = tenantdb.StateActive
	}
	// The schema of a test tenant carries the database's name: roles are shared by the whole cluster.
	u, _ := url.Parse(e.AdminURL)
	schema := tenantdb.SchemaName(strings.TrimPrefix(u.Path, "/") + "-" + t.Name)
	reg := tenantdb.Registration{
		Schema: schema, Role: schema, Namespace: "test", Name: t.Name, UID: t.Name, DisplayName: t.DisplayName,
		Branding: map[string]string{"primaryColor": t.PrimaryColor},
		Settings: map[string]any{"currency": t.Currency, "approvalThreshold": t.Threshold},
		State:    tenantdb.StateProvisioning, Hosts: t.Hosts,
	}
	if err := e.Admin.Register(ctx, reg); err != nil {
		return nil, err
	}
	if err := e.Admin.EnsureSchema(ctx, schema, schema); err != nil {
		return nil, err
	}
	version, err := e.Admin.Migrate(ctx, schema, schema, migrations.FS())
	if err != nil {
		return nil, err
	}
	hash, err := password.Hash(t.AdminPassword)
	if err != nil {
		return nil, err
	}
	if _, err := e.Admin.EnsureAdmin(ctx, schema, t.AdminEmail, hash); err != nil {
		return nil, err
	}
	if err := e.Admin.GrantTenant(ctx, schema, e.AppRole); err != nil {
		return nil, err
	}
	if err := e.Admin.SetState(ctx, schema, t.State, version); err != nil {
		return nil, err
	}
	return &Provisioned{Tenant: t, Schema: schema}, nil
}
