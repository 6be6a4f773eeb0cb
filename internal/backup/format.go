package backup

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"tenantry.dev/tenantry/internal/tenantdb"
)

// A backup is a directory of the object store (Dir): manifest.json, written last, and one object per
// table under tables/, the table's rows in PostgreSQL's COPY text format, gzip-compressed. The manifest
// names each table's object; the objects are numbered, never named after a table (a table's name is
// the tenant's to choose). docs/lifecycle.md describes the format for readers other than Tenantry.

// FormatVersion is the version of the format this package writes, and the newest it reads.
const FormatVersion = 1

// ManifestName is the manifest's object in a backup's directory.
const ManifestName = "manifest.json"

// Dir is the directory of a backup in its store: <namespace>/<tenant>/<backup>-<the backup's UID>/.
func Dir(namespace, tenant, backup, backupUID string) string {
	return namespace + "/" + tenant + "/" + backup + "-" + backupUID + "/"
}

// TenantDir is the directory of every backup of a tenant (of that name, in that namespace).
func TenantDir(namespace, tenant string) string { return namespace + "/" + tenant + "/" }

// Manifest describes one backup.
type Manifest struct {
	// Format is FormatVersion when it was written.
	Format int `json:"format"`
	// Tenant is who was backed up.
	Tenant Tenant `json:"tenant"`
	// Backup is the Backup object that took it.
	Backup Object `json:"backup"`
	// SchemaVersion is the schema's version in the snapshot: a restore makes the schema at this version,
	// fills it, then migrates it to its release's.
	SchemaVersion int64 `json:"schemaVersion"`
	// Release is what took the backup.
	Release Release `json:"release"`
	// StartedAt is the snapshot's moment, CompletedAt when the last table was written.
	StartedAt   time.Time `json:"startedAt"`
	CompletedAt time.Time `json:"completedAt"`
	// Compression of every table's object: "gzip".
	Compression string `json:"compression"`
	// Tables are the schema's tables, in name order.
	Tables []Table `json:"tables"`
	// Sequences are the schema's sequences' values at the snapshot (or a little after).
	Sequences []Sequence `json:"sequences"`
}

// Tenant is a tenant's identity, and where its schema was.
type Tenant struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	App       string `json:"app"`
	Database  string `json:"database"`
	Shard     string `json:"shard"`
	Schema    string `json:"schema"`
}

// Object names a Kubernetes object.
type Object struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Release is the operator and app that took a backup, and the schema version their migrations reach.
type Release struct {
	Operator      string `json:"operator"`
	Image         string `json:"image,omitempty"`
	SchemaVersion int64  `json:"schemaVersion"`
}

// Table is one table's rows in a backup.
type Table struct {
	Name string `json:"name"`
	// Columns are the columns of each row, in order.
	Columns []string `json:"columns"`
	// Object is the table's object, relative to the backup's directory.
	Object string `json:"object"`
	// Rows is the number of rows; Bytes the size of the COPY text, and StoredBytes of its object.
	Rows        int64 `json:"rows"`
	Bytes       int64 `json:"bytes"`
	StoredBytes int64 `json:"storedBytes"`
	// SHA256 is the hex SHA-256 of the COPY text (before compression).
	SHA256 string `json:"sha256"`
}

// Sequence is a sequence's last value, and the table that owns it (an identity column's), if one does.
type Sequence struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
	Table string `json:"table,omitempty"`
}

// CopyTable is the table as tenantdb copies it, with its count of rows (tenantdb.Load makes indexes
// after many rows).
func (t Table) CopyTable() tenantdb.CopyTable {
	return tenantdb.CopyTable{Name: t.Name, Columns: t.Columns, Rows: t.Rows}
}

// Rows is the number of rows over every table.
func (m *Manifest) Rows() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.Rows
	}
	return n
}

// StoredBytes is the size of the backup in its store: its tables' objects (the manifest aside).
func (m *Manifest) StoredBytes() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.StoredBytes
	}
	return n
}

var (
	objectName = regexp.MustCompile(`^tables/[0-9]{4,}\.copy\.gz$`)
	sha256Hex  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// parseManifest reads a manifest, and refuses one this package cannot restore, or whose objects lie
// outside its directory.
func parseManifest(data []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("the manifest is not valid JSON: %w", err)
	}
	switch {
	case m.Format < 1 || m.Format > FormatVersion:
		return m, fmt.Errorf("the manifest is of format %d; this release reads formats 1 to %d", m.Format, FormatVersion)
	case m.Compression != "gzip":
		return m, fmt.Errorf("the manifest names compression %q; this release reads gzip", m.Compression)
	case m.SchemaVersion < 1:
		return m, fmt.Errorf("the manifest names schema version %d", m.SchemaVersion)
	}
	seen := map[string]bool{}
	for _, t := range m.Tables {
		if !objectName.MatchString(t.Object) || !sha256Hex.MatchString(t.SHA256) || t.Name == "" || len(t.Columns) == 0 || seen[t.Name] {
			return m, fmt.Errorf("the manifest's entry for table %q is not valid", t.Name)
		}
		seen[t.Name] = true
	}
	return m, nil
}
