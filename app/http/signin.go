package http

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// signInGuard slows password guessing without letting anyone lock out an account or a tenant.
//
// Failed sign-ins count per client address and per account, within a tenant. The first few of each
// are free; after them every further attempt waits a delay that doubles with each failure, up to a
// minute, and an attempt made before its delay is up is answered 429 with Retry-After, without a
// password check (so it is not a failure, and does not push the delay further). Nothing is ever
// refused for longer than that minute: a shared address (a NAT, an office) is slowed, never locked.
//
// A browser that signed in to an account before holds a device cookie for it (OWASP's "device
// cookies"): its attempts at that account count against that device alone, so no flood at the
// account or from its address, however long, keeps its owner out. The cookie is a MAC under
// Config.DeviceKey, which every replica of the app shares.
type signInGuard struct {
	mu   sync.Mutex
	keys map[string]*backoff
	mac  []byte
	now  func() time.Time
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
	maxGuardKeys  = 100_000          // past this, idle keys are forgotten
	deviceMACSize = 16
	deviceIDSize  = 16
)

func newSignInGuard(key []byte) *signInGuard {
	if len(key) == 0 { // one replica's own: its device cookies mean nothing to the others
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	return &signInGuard{keys: map[string]*backoff{}, mac: key, now: time.Now}
}

// delay is how long a key with these failures waits after its last one.
func delay(failures int) time.Duration {
	if failures < freeFailures {
		return 0
	}
	return min(time.Second<<min(failures-freeFailures, 10), maxDelay)
}

// wait is how long an attempt counted against keys must still wait; 0 lets it through.
func (g *signInGuard) wait(keys []string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var longest time.Duration
	for _, k := range keys {
		b := g.keys[k]
		if b == nil || now.Sub(b.last) > forgetAfter {
			continue
		}
		longest = max(longest, b.last.Add(delay(b.failures)).Sub(now))
	}
	return longest
}

// failed counts a failed password check against keys.
func (g *signInGuard) failed(keys []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if len(g.keys) > maxGuardKeys { // forget idle keys, so a flood of addresses cannot grow memory forever
		for k, b := range g.keys {
			if now.Sub(b.last) > forgetAfter {
				delete(g.keys, k)
			}
		}
	}
	for _, k := range keys {
		b := g.keys[k]
		if b == nil || now.Sub(b.last) > forgetAfter {
			b = &backoff{}
			g.keys[k] = b
		}
		b.failures++
		b.last = now
	}
}

// succeeded forgets the failures of keys (the account's and the device's; never the address's, which
// an insider could otherwise clear by signing in to their own account between guesses at others).
func (g *signInGuard) succeeded(keys []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		delete(g.keys, k)
	}
}

// keysOf are what an attempt at email in a tenant (schema) counts against: the device alone when the
// request carries a device cookie for that account, else the client's address and the account.
func (g *signInGuard) keysOf(schema, ip, email, deviceCookie string) (keys []string, reset []string) {
	email = strings.ToLower(email)
	if id, ok := g.device(deviceCookie, schema, email); ok {
		k := []string{"device|" + schema + "|" + id}
		return k, k
	}
	account := "account|" + schema + "|" + email
	return []string{"client|" + schema + "|" + ip, account}, []string{account}
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
