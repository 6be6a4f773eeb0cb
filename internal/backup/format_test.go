package backup

import (
	"encoding/json"
	"strings"
	"testing"
)

// A manifest is refused unless this release can restore it and every object it names lies inside its
// backup's tables/ directory.
func TestParseManifest(t *testing.T) {
	good := Manifest{Format: 1, Compression: "gzip", SchemaVersion: 2, Tables: []Table{
		{Name: "expenses", Columns: []string{"id"}, Object: "tables/0003.copy.gz", SHA256: strings.Repeat("a", 64)}}}
	for _, tc := range []struct {
		name   string
		change func(*Manifest)
		want   string
	}{
		{"good", func(*Manifest) {}, ""},
		{"newer format", func(m *Manifest) { m.Format = 2 }, "format 2"},
		{"other compression", func(m *Manifest) { m.Compression = "zstd" }, "compression"},
		{"no version", func(m *Manifest) { m.SchemaVersion = 0 }, "schema version 0"},
		{"object outside its directory", func(m *Manifest) { m.Tables[0].Object = "../other/tables/0003.copy.gz" }, "not valid"},
		{"object named after a table", func(m *Manifest) { m.Tables[0].Object = "tables/expenses.copy.gz" }, "not valid"},
		{"checksum not hex", func(m *Manifest) { m.Tables[0].SHA256 = strings.Repeat("z", 64) }, "not valid"},
		{"no columns", func(m *Manifest) { m.Tables[0].Columns = nil }, "not valid"},
		{"a table twice", func(m *Manifest) { m.Tables = append(m.Tables, m.Tables[0]) }, "not valid"},
	} {
		m := good
		m.Tables = append([]Table(nil), good.Tables...)
		tc.change(&m)
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseManifest(data)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := parseManifest([]byte("{")); err == nil {
		t.Error("a manifest that is not JSON was taken")
	}
}

// A table of a backup tells the load how many rows come: from many on, indexes are made after them.
func TestTable_CopyTable(t *testing.T) {
	c := Table{Name: "expenses", Columns: []string{"id"}, Rows: 1000000}.CopyTable()
	if c.Rows != 1000000 || c.Name != "expenses" || len(c.Columns) != 1 {
		t.Fatalf("CopyTable() = %+v", c)
	}
}
