package tenantdb

import "strings"

// splitStatements splits SQL text into its statements at the semicolons that end them, as PostgreSQL's
// lexer sees them: not inside quoted strings ('...', E'...' with backslash escapes), quoted
// identifiers, dollar-quoted bodies ($tag$...$tag$) or comments (-- and nested /* */). Empty
// statements are dropped; each statement keeps its text and no trailing semicolon.
//
// Citus cannot propagate a DDL statement that arrives in one query string with others (it forwards the
// string it was given, and the worker refuses several commands in one prepared statement), so on Citus
// a migration block (goose's StatementBegin/End) is sent one statement at a time, in its transaction.
func splitStatements(sql string) []string {
	var out []string
	start := 0
	emit := func(end int) {
		if s := strings.TrimSpace(sql[start:end]); s != "" && !onlyComments(s) {
			out = append(out, s)
		}
		start = end + 1
	}
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == ';':
			emit(i)
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0
			for ; i < len(sql); i++ {
				if sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*' {
					depth++
					i++
				} else if sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/' {
					depth--
					i++
					if depth == 0 {
						break
					}
				}
			}
		case c == '\'':
			escapes := i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdentChar(sql[i-2]))
			for i++; i < len(sql); i++ {
				if escapes && sql[i] == '\\' {
					i++
				} else if sql[i] == '\'' {
					if i+1 < len(sql) && sql[i+1] == '\'' {
						i++
					} else {
						break
					}
				}
			}
		case c == '"':
			for i++; i < len(sql) && sql[i] != '"'; i++ {
			}
		case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			j := i + 1
			for j < len(sql) && isIdentChar(sql[j]) && sql[j] != '$' {
				j++
			}
			if j < len(sql) && sql[j] == '$' && (j == i+1 || !isDigit(sql[i+1])) {
				tag := sql[i : j+1]
				if end := strings.Index(sql[j+1:], tag); end >= 0 {
					i = j + 1 + end + len(tag) - 1
				} else {
					i = len(sql)
				}
			}
		}
	}
	emit(len(sql))
	return out
}

// onlyComments reports whether s holds nothing but comments and space.
func onlyComments(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			return false
		}
	}
	return true
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
