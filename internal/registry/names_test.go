package registry

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// validIdentifier: what PostgreSQL takes unquoted, within its 63 bytes.
func validIdentifier(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// The pairs that an earlier release mapped to one name each get their own.
func TestTenantName_knownCollisions(t *testing.T) {
	pairs := [][2][3]string{
		// Schema names: '.' and '-' spelled differently.
		{{"db", "default", "acme.corp"}, {"db", "default", "acme-corp-80a1d5cc62"}},
		{{"db", "default", "acme.corp"}, {"db", "default", "acme-corp"}},
		// The same Tenant name in two namespaces.
		{{"db", "team-a", "acme"}, {"db", "team-b", "acme"}},
		// The same namespace and name in two databases of one server (roles are server-wide).
		{{"db1", "default", "globex"}, {"db2", "default", "globex"}},
		// Parts that concatenate to the same string.
		{{"db", "team-a", "expenses"}, {"db", "team", "a-expenses"}},
		{{"dbx", "y", "z"}, {"db", "xy", "z"}},
	}
	for _, p := range pairs {
		a, b := TenantName(p[0][0], p[0][1], p[0][2]), TenantName(p[1][0], p[1][1], p[1][2])
		if a == b {
			t.Errorf("TenantName%v and TenantName%v are both %q", p[0], p[1], a)
		}
	}
	apps := [][3]string{{"db", "team-a", "expenses"}, {"db", "team", "a-expenses"}, {"db", "team", "a.expenses"}}
	seen := map[string][3]string{}
	for _, a := range apps {
		n := AppRoleName(a[0], a[1], a[2])
		if other, ok := seen[n]; ok {
			t.Errorf("AppRoleName%v and AppRoleName%v are both %q", a, other, n)
		}
		seen[n] = a
	}
}

func TestTenantName_shape(t *testing.T) {
	long := strings.Repeat("x", 190) + "-long-name"
	for _, name := range []string{"acme", "acme-corp", "a.b.c", long, "9lives"} {
		got := TenantName("tenantry", "default", name)
		if !validIdentifier(got) || !strings.HasPrefix(got, "tenant_") {
			t.Errorf("TenantName(%q) = %q: not a valid tenant identifier of at most 63 bytes", name, got)
		}
		if got != TenantName("tenantry", "default", name) {
			t.Errorf("TenantName(%q) is not stable", name)
		}
	}
	if got := TenantName("tenantry", "default", "acme-corp"); !strings.HasPrefix(got, "tenant_acme_corp_") {
		t.Errorf("TenantName(acme-corp) = %q: the name should stay readable", got)
	}
	if got := AppRoleName("tenantry", "default", long); !validIdentifier(got) || !strings.HasPrefix(got, "tenantry_app_") {
		t.Errorf("AppRoleName(long) = %q", got)
	}
}

// Property: over many random identities built from few characters (so that readable parts collide
// often), no two distinct identities share a name.
func TestTenantName_oneToOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	part := func(max int) string {
		const alphabet = "ab-.1"
		b := make([]byte, 1+r.IntN(max))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	seen := map[string]string{}
	for range 200_000 {
		db, ns, name := part(3), part(4), part(6)
		id := fmt.Sprintf("%q/%q/%q", db, ns, name)
		n := TenantName(db, ns, name)
		if other, ok := seen[n]; ok && other != id {
			t.Fatalf("%s and %s share %q", id, other, n)
		}
		seen[n] = id
	}
}

// Fuzz: two different identities never get one name, and every name is a valid identifier.
func FuzzTenantName(f *testing.F) {
	f.Add("db", "team-a", "expenses", "db", "team", "a-expenses")
	f.Add("db", "default", "acme.corp", "db", "default", "acme-corp-80a1d5cc62")
	f.Fuzz(func(t *testing.T, db1, ns1, n1, db2, ns2, n2 string) {
		a, b := TenantName(db1, ns1, n1), TenantName(db2, ns2, n2)
		if !validIdentifier(a) {
			t.Fatalf("TenantName(%q, %q, %q) = %q: not a valid identifier", db1, ns1, n1, a)
		}
		if a == b && (db1 != db2 || ns1 != ns2 || n1 != n2) {
			t.Fatalf("(%q, %q, %q) and (%q, %q, %q) share %q", db1, ns1, n1, db2, ns2, n2, a)
		}
	})
}

// A registry's shard column spells home as the empty string, and nothing else changes on the way.
func TestShardColumn(t *testing.T) {
	for name, column := range map[string]string{HomeShard: "", "east": "east"} {
		if got := ShardColumn(name); got != column {
			t.Errorf("ShardColumn(%q) = %q, want %q", name, got, column)
		}
		if got := ShardName(column); got != name {
			t.Errorf("ShardName(%q) = %q, want %q", column, got, name)
		}
	}
}

// Only a channel the operator could have made is taken from an app's Secret, which its namespace may
// edit: a name too long for NOTIFY, or naming anything else, is not.
func TestValidChannel(t *testing.T) {
	for channel, want := range map[string]bool{
		ChannelPrefix + "0123456789abcdef0123456789abcdef":   true,
		ChannelPrefix + "0123456789ABCDEF0123456789abcdef":   false,
		ChannelPrefix + "0123456789abcdef0123456789abcde":    false,
		ChannelPrefix + "0123456789abcdef0123456789abcdef00": false,
		"tenantry_tenants":                                  false,
		"other_0123456789abcdef0123456789abcdef":            false,
		ChannelPrefix + strings.Repeat("a", 64):             false,
		ChannelPrefix + "0123456789abcdef0123456789abcde\"": false,
		"": false,
	} {
		if got := ValidChannel(channel); got != want {
			t.Errorf("ValidChannel(%q) = %v, want %v", channel, got, want)
		}
	}
}
