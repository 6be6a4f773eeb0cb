// Package pgerr tells what a PostgreSQL error means for whoever met it. The operator and the app both
// ask it whether the database is away; neither keeps its own list.
package pgerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Away reports whether an error means the database cannot be reached right now: no connection, a
// connection lost, a server shutting down or starting up, too many connections, a timeout. Trying again
// later is the answer; nothing about the request was wrong.
func Away(err error) bool {
	if err == nil {
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300": // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	return false
}

// SetRoleDenied reports whether an error is PostgreSQL refusing a switch of role ("permission denied
// to set role"). Right after a GRANT, a backend that was filling its role-membership cache while the
// GRANT committed can keep the old memberships until the next change of any role's (seen here about
// once in a few thousand grants, on PostgreSQL 15). A connection that meets it is closed, and the
// work tried once more on another, whose backend reads the memberships afresh.
func SetRoleDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501" && strings.Contains(pgErr.Message, "set role")
}

// TimeoutError is a statement that the server cancelled because it ran past a timeout the operator set
// on its sessions: the database, or a lock some login holds in it, kept it waiting.
type TimeoutError struct {
	Setting string // "statement_timeout" or "lock_timeout"
	Err     error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%v (the database did not answer within the operator's %s: a lock some login holds, or a query "+
		"that runs too long, keeps it waiting; other databases carry on)", e.Err, e.Setting)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// ExplainTimeout returns err as a *TimeoutError when the server cancelled a statement for running past
// statement_timeout or waiting past lock_timeout, and err itself otherwise.
func ExplainTimeout(err error) error {
	var pgErr *pgconn.PgError
	var te *TimeoutError
	if !errors.As(err, &pgErr) || errors.As(err, &te) {
		return err
	}
	switch {
	case pgErr.Code == "57014" && strings.Contains(pgErr.Message, "statement timeout"):
		return &TimeoutError{Setting: "statement_timeout", Err: err}
	case pgErr.Code == "55P03" && strings.Contains(pgErr.Message, "lock timeout"):
		return &TimeoutError{Setting: "lock_timeout", Err: err}
	}
	return err
}
