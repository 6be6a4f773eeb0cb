package testenv

import (
	"bufio"
	"io"
	"regexp"
	"strings"
)

// The admin session's statements, as tests check them (docs/security.md): the admin session creates,
// drops, owns, grants and registers tenant schemas, and never reads, writes, truncates or calls anything
// inside one, nor switches to another role or search_path.
var (
	// tenantObject is a name qualified by a tenant schema ("tenant_..."."x" or tenant_....x): an object
	// inside one, which only a tenant session may touch.
	tenantObject = regexp.MustCompile(`(?i)("tenant_[^"]+"|\btenant_[a-z0-9_$]+)\s*\.\s*("[^"]+"|[a-z_])`)
	// actsAs is a statement that switches the session to another role or search_path: an admin session
	// that did would run whatever the tenant planted there.
	// set_config and DO blocks are flagged whole: the admin session needs neither, and what they set or
	// run is not in their text.
	actsAs = regexp.MustCompile(`(?i)(^|;)\s*(SET\s+(LOCAL\s+|SESSION\s+)?(ROLE|SESSION\s+AUTHORIZATION|search_path)\b|RESET\s+(ROLE|search_path|ALL)\b|DO\b)|\bset_config\s*\(`)
	// lockOnly is LOCK TABLE alone: it takes locks on a tenant's tables (a move's fence) and runs nothing.
	lockOnly = regexp.MustCompile(`(?i)^\s*LOCK\s+TABLE\b[^;]*;?\s*$`)
)

// AdminViolation says why a statement sent on an admin session, with its bound arguments, reaches inside
// a tenant schema, or returns "".
func AdminViolation(sql string, args []any) string {
	if actsAs.MatchString(sql) {
		return "switches role or search_path"
	}
	if tenantObject.MatchString(sql) && !lockOnly.MatchString(sql) {
		return "names an object inside a tenant schema"
	}
	for _, a := range args {
		if s, ok := a.(string); ok && tenantObject.MatchString(s) {
			return "binds the name of an object inside a tenant schema"
		}
	}
	return ""
}

// ServerLogSettings make a PostgreSQL server log every statement with the application and user that
// sent it, for AdminViolationsInLog (ALTER SYSTEM SET each, then pg_reload_conf()).
var ServerLogSettings = map[string]string{"log_statement": "all", "log_line_prefix": "%a|%u|"}

// logEntry starts a server log entry written with ServerLogSettings.
var logEntry = regexp.MustCompile(`^([^|\n]*)\|([^|\n]*)\|(LOG|ERROR|WARNING|DETAIL|STATEMENT|HINT|CONTEXT|FATAL|NOTICE):\s+(.*)$`)

// statementEntry is the message of a logged statement: simple, or an extended-protocol execute.
var statementEntry = regexp.MustCompile(`^(statement|execute [^:]*):\s`)

// AdminViolationsInLog reads a server log written with ServerLogSettings and returns every statement
// that application app sent as user (the operator's admin login) and that AdminViolation flags, with the
// number of such statements read. Bound arguments are not in the log: statements are judged by their
// text.
func AdminViolationsInLog(r io.Reader, app, user string) (violations []string, statements int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	var cur strings.Builder
	match := false
	flush := func() {
		if match {
			statements++
			if why := AdminViolation(cur.String(), nil); why != "" {
				violations = append(violations, why+": "+strings.Join(strings.Fields(cur.String()), " "))
			}
		}
		cur.Reset()
		match = false
	}
	for sc.Scan() {
		line := sc.Text()
		if m := logEntry.FindStringSubmatch(line); m != nil {
			flush()
			if m[1] == app && m[2] == user && m[3] == "LOG" && statementEntry.MatchString(m[4]) {
				match = true
				cur.WriteString(statementEntry.ReplaceAllString(m[4], ""))
			}
			continue
		}
		if match {
			cur.WriteString("\n" + line)
		}
	}
	flush()
	return violations, statements, sc.Err()
}
