package http

import (
	"testing"
)

// A device cookie made by one replica is good at every replica that shares its key, for its own
// tenant and account only (the email's case aside); one made under another key, or altered, is not.
func TestSignInGuard_deviceCookies(t *testing.T) {
	key := []byte("the key every replica of the app shares")
	one, two, other := newSignInGuard(key), newSignInGuard(key), newSignInGuard([]byte("another app's key"))
	cookie := one.deviceCookie("tenant_acme", "Finance@Acme.com")
	swap := "A" // one character of it changed
	if cookie[10] == 'A' {
		swap = "B"
	}
	altered := cookie[:10] + swap + cookie[11:]
	if _, ok := two.device(cookie, "tenant_acme", "finance@acme.com"); !ok {
		t.Error("another replica refuses the device cookie")
	}
	for name, check := range map[string]func() bool{
		"another account":  func() bool { _, ok := two.device(cookie, "tenant_acme", "boss@acme.com"); return ok },
		"another tenant":   func() bool { _, ok := two.device(cookie, "tenant_globex", "finance@acme.com"); return ok },
		"another key":      func() bool { _, ok := other.device(cookie, "tenant_acme", "finance@acme.com"); return ok },
		"an altered value": func() bool { _, ok := two.device(altered, "tenant_acme", "finance@acme.com"); return ok },
		"garbage":          func() bool { _, ok := two.device("not a cookie", "tenant_acme", "finance@acme.com"); return ok },
	} {
		if check() {
			t.Errorf("a device cookie is accepted for %s", name)
		}
	}
}

// A client's key is its address, an IPv6 client's its /64 (it has the whole of it to pick from); an
// account's key ignores the email's case.
func TestSignInGuard_keys(t *testing.T) {
	g := newSignInGuard(nil)
	a, _ := g.keysOf("tenant_acme", "2001:db8:1:2::1", "Boss@Acme.com", "")
	b, _ := g.keysOf("tenant_acme", "2001:db8:1:2:ffff::9", "boss@acme.com", "")
	c, _ := g.keysOf("tenant_acme", "2001:db8:1:3::1", "boss@acme.com", "")
	if a[0] != b[0] || a[1] != b[1] {
		t.Error("two addresses of one IPv6 /64, or two spellings of one email, count apart")
	}
	if a[0] == c[0] || a[1] != c[1] {
		t.Error("another /64 counts with the first, or the account apart")
	}
}

// An X-Forwarded-For entry with a port names its address.
func TestForwardedAddr(t *testing.T) {
	for _, c := range []struct{ entry, want string }{{"203.0.113.7", "203.0.113.7"}, {" 203.0.113.7:5123", "203.0.113.7"},
		{"[2001:db8::7]:443", "2001:db8::7"}, {"2001:db8::7", "2001:db8::7"}} {
		entry, want := c.entry, c.want
		if a, err := forwardedAddr(entry); err != nil || a.String() != want {
			t.Errorf("forwardedAddr(%q) = %v, %v; want %s", entry, a, err, want)
		}
	}
	if _, err := forwardedAddr("unknown"); err == nil {
		t.Error("forwardedAddr(\"unknown\") gave an address")
	}
}
