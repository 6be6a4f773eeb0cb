package tenantdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sync"

	"github.com/pressly/goose/v3"
)

// Plan is a release's migrations as the statements goose would send for them: parsed once, by goose's
// own parser, and then sent to each schema of a fleet in one pipelined round trip (ApplyPlan), instead
// of goose's fifteen or so round trips per schema. The version rows are goose's own, so a schema
// migrated from a Plan reads the same to goose's tools as one goose migrated.
type Plan struct {
	Steps []PlanStep
}

// PlanStep is one migration: its statements, then the version row that records it.
type PlanStep struct {
	Version    int64
	Source     string
	Statements []string
	// VersionSQL and VersionArgs insert the migration's row into goose's version table.
	VersionSQL  string
	VersionArgs []any
}

// Target is the version the plan ends at, 0 for an empty plan.
func (p *Plan) Target() int64 {
	if len(p.Steps) == 0 {
		return 0
	}
	return p.Steps[len(p.Steps)-1].Version
}

// From returns the steps after version v.
func (p *Plan) From(v int64) []PlanStep {
	for i, s := range p.Steps {
		if s.Version > v {
			return p.Steps[i:]
		}
	}
	return nil
}

// ErrNotPipelinable says a migration cannot run in one transaction with others (goose's
// "-- +goose NO TRANSACTION"): such a release is applied with goose's own runner (Migrate).
var ErrNotPipelinable = errors.New("a migration runs outside a transaction (-- +goose NO TRANSACTION)")

// gooseGlobals guards goose's package-level settings, which the legacy API that parses a single
// migration reads. Nothing else in Tenantry uses them: Migrate runs goose's Provider, which has its own.
var gooseGlobals sync.Mutex

// NewPlan parses every migration of fsys with goose and records what goose would send to apply it.
func NewPlan(fsys fs.FS) (*Plan, error) {
	gooseGlobals.Lock()
	defer gooseGlobals.Unlock()
	goose.SetBaseFS(fsys)
	defer goose.SetBaseFS(nil)
	goose.SetLogger(goose.NopLogger())
	goose.SetTableName(VersionTable)
	if err := goose.SetDialect(string(goose.DialectPostgres)); err != nil {
		return nil, err
	}
	migrations, err := goose.CollectMigrations(".", 0, math.MaxInt64)
	if err != nil {
		return nil, fmt.Errorf("collecting migrations: %w", err)
	}
	rec := &recorder{}
	db := sql.OpenDB(rec)
	defer db.Close()
	plan := &Plan{}
	for _, m := range migrations {
		rec.reset()
		if err := m.UpContext(context.Background(), db); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", m.Source, err)
		}
		if !rec.inTx || len(rec.execs) == 0 {
			return nil, fmt.Errorf("%s: %w", m.Source, ErrNotPipelinable)
		}
		last := rec.execs[len(rec.execs)-1]
		step := PlanStep{Version: m.Version, Source: m.Source, VersionSQL: last.query, VersionArgs: last.args}
		for _, e := range rec.execs[:len(rec.execs)-1] {
			step.Statements = append(step.Statements, e.query)
		}
		plan.Steps = append(plan.Steps, step)
	}
	return plan, nil
}

// recorder is a database/sql driver that executes nothing and records what it is sent: how goose's
// parser and runner are asked what they would do.
type recorder struct {
	execs []recorded
	inTx  bool
}

type recorded struct {
	query string
	args  []any
}

func (r *recorder) reset()                                       { r.execs, r.inTx = nil, false }
func (r *recorder) Connect(context.Context) (driver.Conn, error) { return recorderConn{r}, nil }
func (r *recorder) Driver() driver.Driver                        { return nil }

type recorderConn struct{ r *recorder }

func (c recorderConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("recorder: prepared statements are not recorded")
}
func (c recorderConn) Close() error { return nil }
func (c recorderConn) Begin() (driver.Tx, error) {
	c.r.inTx = true
	return recorderTx{}, nil
}

func (c recorderConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	vals := make([]any, len(args))
	for i, a := range args {
		vals[i] = a.Value
	}
	c.r.execs = append(c.r.execs, recorded{query: query, args: vals})
	return driver.RowsAffected(0), nil
}

func (c recorderConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return emptyRows{}, nil
}

type recorderTx struct{}

func (recorderTx) Commit() error   { return nil }
func (recorderTx) Rollback() error { return nil }

type emptyRows struct{}

func (emptyRows) Columns() []string              { return nil }
func (emptyRows) Close() error                   { return nil }
func (emptyRows) Next(dest []driver.Value) error { return io.EOF }
