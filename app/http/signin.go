package http

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// signInGuard slows password guessing without letting anyone lock out an account or a tenant.
//
// Failed sign-ins count per client address (an IPv6 client by its /64) and per account, within a
// tenant. The first few of each are free; after them every further attempt waits a delay that doubles
// with each failure, up to a minute, and an attempt made before its delay is up is answered 429 with
// Retry-After, without a password check (so it is not a failure, and does not push the delay further).
// Nothing is ever refused for longer than that minute: a shared address (a NAT, an office) is slowed,
// never locked. An attempt is counted as a failure when it is let through (admit), and given back if
// it was not one: a burst of parallel attempts cannot all pass before the first of them fails.
//
// A browser that signed in to an account before holds a device cookie for it (OWASP's "device
// cookies"): its attempts at that account count against that device alone, so no flood at the
// account or from its address, however long, keeps its owner out. The cookie is a MAC under
// Config.DeviceKey, which every replica of the app shares.
type signInGuard struct {
	mu   sync.Mutex
	keys map[guardKey]*backoff
	mac  []byte
	now  func() time.Time
}

// guardKey is a hash of what a key counts (client, account or device, and the tenant): its size is
// bounded whatever a client sends.
type guardKey [16]byte

func keyOf(parts ...string) guardKey {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var k guardKey
	copy(k[:], h.Sum(nil))
	return k
}

// backoff is one key's recent failures.
type backoff struct {
	failures int
	last     time.Time
}

const (
	freeFailures  = 5                // failures of a key before any delay
	maxDelay      = time.Minute      // the longest delay
	forgetAfter   = 15 * time.Minute // a key quiet this long starts over
	maxGuardKeys  = 200_000          // past this, idle keys are forgotten, then the oldest (about 20 MB)
	deviceMACSize = 16
	deviceIDSize  = 16
)

func newSignInGuard(key []byte) *signInGuard {
	if len(key) == 0 { // one replica's own: its device cookies mean nothing to the others
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	return &signInGuard{keys: map[guardKey]*backoff{}, mac: key, now: time.Now}
}

// delay is how long a key with these failures waits after its last one.
func delay(failures int) time.Duration {
	if failures < freeFailures {
		return 0
	}
	return min(time.Second<<min(failures-freeFailures, 10), maxDelay)
}

// admit lets an attempt counted against keys through, counting it as a failure until it is given
// back (refund), or returns how long it must still wait.
func (g *signInGuard) admit(keys []guardKey) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var longest time.Duration
	for _, k := range keys {
		if b := g.keys[k]; b != nil && now.Sub(b.last) <= forgetAfter {
			longest = max(longest, b.last.Add(delay(b.failures)).Sub(now))
		}
	}
	if longest > 0 {
		return longest
	}
	g.bound(now)
	for _, k := range keys {
		b := g.keys[k]
		if b == nil || now.Sub(b.last) > forgetAfter {
			b = &backoff{}
			g.keys[k] = b
		}
		b.failures++
		b.last = now
	}
	return 0
}

// refund gives back an admitted attempt that was no failure: the sign-in succeeded (then the account's
// and the device's failures are forgotten too: clear), or it was never checked (the server busy).
func (g *signInGuard) refund(keys, clear []guardKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		if b := g.keys[k]; b != nil && b.failures > 0 {
			b.failures--
		}
	}
	for _, k := range clear {
		delete(g.keys, k)
	}
}

// bound keeps the keys within maxGuardKeys: idle ones go first, then the longest quiet.
func (g *signInGuard) bound(now time.Time) {
	if len(g.keys) < maxGuardKeys {
		return
	}
	for k, b := range g.keys {
		if now.Sub(b.last) > forgetAfter {
			delete(g.keys, k)
		}
	}
	if len(g.keys) < maxGuardKeys {
		return
	}
	lasts := make([]time.Time, 0, len(g.keys))
	for _, b := range g.keys {
		lasts = append(lasts, b.last)
	}
	slices.SortFunc(lasts, func(a, b time.Time) int { return a.Compare(b) })
	cut := lasts[len(lasts)/5] // the quietest fifth goes
	for k, b := range g.keys {
		if !b.last.After(cut) {
			delete(g.keys, k)
		}
	}
}

// keysOf are what an attempt at email in a tenant (schema) counts against: the device alone when the
// request carries a device cookie for that account, else the client's address and the account. clear
// are the keys a success forgets.
func (g *signInGuard) keysOf(schema, ip, email, deviceCookie string) (keys, clear []guardKey) {
	email = strings.ToLower(email)
	if id, ok := g.device(deviceCookie, schema, email); ok {
		k := []guardKey{keyOf("device", schema, id)}
		return k, k
	}
	if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
		if p, err := a.Unmap().Prefix(64); err == nil { // one IPv6 client has a /64 to pick from
			ip = p.String()
		}
	}
	account := keyOf("account", schema, email)
	return []guardKey{keyOf("client", schema, ip), account}, []guardKey{account}
}

// deviceCookie is a new device cookie's value for an account of a tenant.
func (g *signInGuard) deviceCookie(schema, email string) string {
	id := make([]byte, deviceIDSize)
	_, _ = rand.Read(id)
	return base64.RawURLEncoding.EncodeToString(append(id, g.sum(id, schema, strings.ToLower(email))...))
}

// device returns the device ID of a cookie value that is valid for the account.
func (g *signInGuard) device(cookie, schema, email string) (string, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cookie)
	if err != nil || len(raw) != deviceIDSize+deviceMACSize {
		return "", false
	}
	id, sum := raw[:deviceIDSize], raw[deviceIDSize:]
	if !hmac.Equal(sum, g.sum(id, schema, email)) {
		return "", false
	}
	return base64.RawURLEncoding.EncodeToString(id), true
}

func (g *signInGuard) sum(id []byte, schema, email string) []byte {
	m := hmac.New(sha256.New, g.mac)
	m.Write(id)
	m.Write([]byte{0})
	m.Write([]byte(schema))
	m.Write([]byte{0})
	m.Write([]byte(email))
	return m.Sum(nil)[:deviceMACSize]
}

// deviceCookieName is the device cookie's name.
func (s *Server) deviceCookieName() string {
	if s.cfg.SecureCookies {
		return "__Host-tenantry_device"
	}
	return "tenantry_device"
}

// setDeviceCookie gives the browser that just signed in to email a device cookie for it, for a year.
func (s *Server) setDeviceCookie(w http.ResponseWriter, schema, email string) {
	http.SetCookie(w, &http.Cookie{Name: s.deviceCookieName(), Value: s.guard.deviceCookie(schema, email), Path: "/",
		HttpOnly: true, Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: int((365 * 24 * time.Hour).Seconds())})
}

// retryAfter is a wait as a Retry-After value: whole seconds, at least one.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
