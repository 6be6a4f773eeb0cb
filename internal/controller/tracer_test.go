package controller

import (
	"fmt"
	"strings"
	"sync"

	"tenantry.dev/tenantry/test/utils/testenv"
)

// adminTrace records every statement the suite's operator sends on an admin session
// (tenantdb.Options.AdminTracer), and tells which of them reach inside a tenant schema: the admin
// session creates, drops, owns, grants and registers schemas, and never reads, writes, truncates or
// calls anything in one. TestMain fails the suite when any statement did.
type adminTrace struct {
	mu         sync.Mutex
	statements int
	violations []string
}

var adminStatements = &adminTrace{}

func (a *adminTrace) record(sql string, args []any) {
	why := testenv.AdminViolation(sql, args)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statements++
	if why != "" && len(a.violations) < 50 {
		stmt := strings.Join(strings.Fields(sql), " ")
		if len(stmt) > 300 {
			stmt = stmt[:300] + "..."
		}
		a.violations = append(a.violations, fmt.Sprintf("%s: %s %v", why, stmt, args))
	}
}

// report is what TestMain prints: empty when every admin statement kept out of tenant schemas.
func (a *adminTrace) report() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.violations) == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d admin-session statements reached inside a tenant schema:\n  %s", len(a.violations),
		a.statements, strings.Join(a.violations, "\n  "))
}
