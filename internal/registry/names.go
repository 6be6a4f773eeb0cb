package registry

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// maxIdentifier is PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1).
const maxIdentifier = 63

// Prefixes of the names Tenantry derives: no tenant can collide with public, pg_*, tenantry or a
// person's role.
const (
	tenantPrefix  = "tenant_"
	appRolePrefix = "tenantry_app_"
	workerPrefix  = "tenantry_op_"
	shapePrefix   = "tenantry_shape_"
)

// hashLen is the length of the identity hash in a name: 16 base32 characters, 80 bits of SHA-256.
// Two identities share a name only if SHA-256 collides on 80 bits (about one chance in 10^12 among a
// million tenants), and even then the registry refuses the second: it never adopts a schema or role it
// has recorded for another identity.
const hashLen = 16

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// TenantName is the name of a tenant's schema and of the NOLOGIN role that owns it, derived from the
// tenant's identity: the database it lives in, its namespace and its name. Roles are server-wide, so the
// database is part of the identity: the same namespace and name in another database of the same server
// gets another role. The result reads "tenant_<name>_<hash of the identity>": the name, made an
// identifier and cut to fit, is only there for people; the hash is what tells identities apart.
func TenantName(database, namespace, name string) string {
	return derive(tenantPrefix, name, database, namespace, name)
}

// AppRoleName is the login role of the app of an ExpenseApp, derived the same way from the ExpenseApp's
// identity: "tenantry_app_<name>_<hash of database, namespace and name>".
func AppRoleName(database, namespace, app string) string {
	return derive(appRolePrefix, app, database, namespace, app)
}

// WorkerRoleName is the operator's own login for the tenant sessions of an ExpenseApp's tenants on one
// database (tenantdb.Options.Worker), derived like AppRoleName: "tenantry_op_<name>_<hash>".
func WorkerRoleName(database, namespace, app string) string {
	return derive(workerPrefix, app, database, namespace, app)
}

// ShapeName is the scratch schema, and its role, in which the operator applies a release's migrations
// for an ExpenseApp on one database to learn the shape they make (tenantdb.Options.Scratch), derived like
// AppRoleName: "tenantry_shape_<name>_<hash>".
func ShapeName(database, namespace, app string) string {
	return derive(shapePrefix, app, database, namespace, app)
}

// derive builds prefix + readable + "_" + hash of the parts. Each part is length-prefixed before
// hashing, so no two lists of parts hash the same input.
func derive(prefix, readable string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	hash := lowerBase32.EncodeToString(h.Sum(nil))[:hashLen]
	r := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			return c
		case c >= 'A' && c <= 'Z':
			return c + 'a' - 'A'
		default:
			return '_'
		}
	}, readable)
	if room := maxIdentifier - len(prefix) - 1 - hashLen; len(r) > room {
		r = r[:room]
	}
	return prefix + strings.Trim(r, "_") + "_" + hash
}
