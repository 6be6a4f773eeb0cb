package tenantdb

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxIdentifier is PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1).
const maxIdentifier = 63

// schemaPrefix starts every tenant schema, so no tenant name can collide with public, pg_* or tenantry.
const schemaPrefix = "tenant_"

// SchemaName derives the schema of a Tenant from its name. Tenant names are DNS subdomains (a-z, 0-9,
// '-' and '.', up to 253 characters): '-' becomes '_', which keeps the mapping one-to-one. A name with
// a '.' (which '_' would make ambiguous) or one too long for 63 bytes is shortened and given a suffix
// hashed from the whole name, so the result stays valid, unique and the same on every call.
func SchemaName(tenant string) string {
	s := strings.ReplaceAll(tenant, "-", "_")
	if !strings.Contains(tenant, ".") && len(schemaPrefix)+len(s) <= maxIdentifier {
		return schemaPrefix + s
	}
	sum := sha256.Sum256([]byte(tenant))
	suffix := hex.EncodeToString(sum[:])[:10]
	s = strings.ReplaceAll(s, ".", "_")
	if room := maxIdentifier - len(schemaPrefix) - 1 - len(suffix); len(s) > room {
		s = s[:room]
	}
	return schemaPrefix + strings.TrimRight(s, "_") + "_" + suffix
}

// RoleName is the NOLOGIN role that owns a tenant schema: the schema's own name.
func RoleName(schema string) string { return schema }

// AppRoleName is the login role of the app of an ExpenseApp: "tenantry_app_<namespace>_<name>", shortened
// with a hash suffix when that is longer than PostgreSQL allows.
func AppRoleName(namespace, app string) string {
	const prefix = "tenantry_app_"
	s := strings.NewReplacer("-", "_", ".", "_").Replace(namespace + "_" + app)
	if len(prefix)+len(s) <= maxIdentifier {
		return prefix + s
	}
	sum := sha256.Sum256([]byte(namespace + "/" + app))
	return prefix + strings.TrimRight(s[:maxIdentifier-len(prefix)-11], "_") + "_" + hex.EncodeToString(sum[:])[:10]
}
