package tenantdb

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"

	"tenantry.dev/tenantry/internal/registry"
)

// A release applied from a Plan: one transaction per schema, goose's own version rows (goose's tools
// read the new version), the registry's version moved in the same transaction, nothing applied to a
// schema that moved meanwhile, and a failing statement leaving schema and registry where they were.
func TestDB_ApplyPlan(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	v1 := fstest.MapFS{
		"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (id int);\n")},
	}
	v2 := fstest.MapFS{
		"00001_a.sql": v1["00001_a.sql"],
		"00002_b.sql": {Data: []byte("-- +goose Up\nALTER TABLE a ADD COLUMN note text;\nCREATE INDEX a_note ON a (note);\n")},
	}
	schema := "tenant_plan"
	role := newTenantSchema(t, db, schema)
	id, err := db.Register(ctx, Registration{Schema: schema, Role: role.Name, Namespace: "test", Name: "plan", UID: "u",
		DisplayName: "Plan", State: registry.StateActive, SchemaVersion: 1})
	must(t, err)
	if _, err := sessionOf(t, db, schema, role.Name).Migrate(ctx, v1, "test"); err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(v2)
	must(t, err)
	if plan.Target() != 2 || len(plan.From(1)) != 1 || len(plan.From(1)[0].Statements) != 2 {
		t.Fatalf("plan = %+v", plan)
	}

	got, err := sessionOf(t, db, id.Schema, id.Role).ApplyPlan(ctx, 1, plan.From(1))
	if err != nil || got != 2 {
		t.Fatalf("ApplyPlan = %d, %v; want 2", got, err)
	}
	var version int64
	must(t, db.pool.QueryRow(ctx, `SELECT schema_version FROM tenantry.tenants WHERE schema_name = $1`, schema).Scan(&version))
	if version != 2 {
		t.Fatalf("registry version %d after the plan, want 2", version)
	}
	// goose's own runner reads the schema as at version 2, with nothing left to apply.
	if v, err := sessionOf(t, db, schema, role.Name).Migrate(ctx, v2, "test"); err != nil || v != 2 {
		t.Fatalf("goose reads version %d (%v) after the plan, want 2 and nothing to apply", v, err)
	}
	if !exists(t, db, schema, "a") {
		t.Fatal("table a is gone")
	}

	// Applied again from 1: the schema moved on, nothing happens.
	if _, err := sessionOf(t, db, id.Schema, id.Role).ApplyPlan(ctx, 1, plan.From(1)); !errors.As(err, new(*VersionMovedError)) {
		t.Fatalf("ApplyPlan from a stale version = %v, want a VersionMovedError", err)
	}

	// A failing statement: schema and registry stay at 2, the error names the migration.
	bad, err := NewPlan(fstest.MapFS{
		"00001_a.sql": v1["00001_a.sql"], "00002_b.sql": v2["00002_b.sql"],
		"00003_c.sql": {Data: []byte("-- +goose Up\nCREATE TABLE c (id int);\nINSERT INTO nowhere VALUES (1);\n")},
	})
	must(t, err)
	_, err = sessionOf(t, db, id.Schema, id.Role).ApplyPlan(ctx, 2, bad.From(2))
	var me *MigrationError
	if !errors.As(err, &me) || me.Version != 3 {
		t.Fatalf("ApplyPlan of a failing migration = %v, want a MigrationError for version 3", err)
	}
	if exists(t, db, schema, "c") {
		t.Fatal("table c exists: the failed transaction was not rolled back")
	}
	must(t, db.pool.QueryRow(ctx, `SELECT schema_version FROM tenantry.tenants WHERE schema_name = $1`, schema).Scan(&version))
	if version != 2 {
		t.Fatalf("registry version %d after a failed plan, want 2", version)
	}
	// The connection went back to the pool usable.
	if got, err := sessionOf(t, db, id.Schema, id.Role).ApplyPlan(ctx, 2, nil); err != nil || got != 2 {
		t.Fatalf("empty ApplyPlan = %d, %v", got, err)
	}
}
