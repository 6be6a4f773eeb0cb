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
