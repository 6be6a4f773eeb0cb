package pgerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestAway(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("scan: wrong type"), false},
		{&pgconn.PgError{Code: "23505"}, false}, // unique_violation: the request's fault
		{&pgconn.PgError{Code: "42P01"}, false},
		{&pgconn.PgError{Code: "57P01"}, true}, // admin_shutdown
		{&pgconn.PgError{Code: "08006"}, true}, // connection_failure
		{&pgconn.PgError{Code: "53300"}, true}, // too_many_connections
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("acquiring: %w", context.DeadlineExceeded), true},
	}
	for _, tt := range tests {
		if got := Away(tt.err); got != tt.want {
			t.Errorf("Away(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestSetRoleDenied(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "42501", Message: `permission denied to set role "tenant_acme"`}, true},
		{fmt.Errorf("switching to tenant: %w", &pgconn.PgError{Code: "42501", Message: `permission denied to set role "t"`}), true},
		{&pgconn.PgError{Code: "42501", Message: "permission denied for table expenses"}, false},
		{&pgconn.PgError{Code: "42601", Message: "set role"}, false},
		{nil, false},
	} {
		if got := SetRoleDenied(tc.err); got != tc.want {
			t.Errorf("SetRoleDenied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
