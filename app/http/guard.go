package http

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/internal/password"
)

// maxBody is the largest request body the app reads.
const maxBody = 1 << 20

// validText refuses, with a 400, a request whose query, form or JSON body holds text PostgreSQL cannot
// store: invalid UTF-8 or a NUL character. Without it such text reaches the database and comes back as a
// 500. The body is read once, checked, and handed on.
func validText(next http.Handler) http.Handler {
	bad := app.Errorf(app.EINVALID, "The request holds text that is not valid UTF-8, or a NUL character.")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, vs := range r.URL.Query() {
			if !allValid(vs) {
				writeError(w, r, bad)
				return
			}
		}
		if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				writeError(w, r, app.Errorf(app.EINVALID, "The request body is too large (at most 1 MiB)."))
				return
			}
			// A JSON string may spell NUL as an escape (\u0000), a form as %00.
			if !utf8.Valid(body) || bytes.IndexByte(body, 0) >= 0 || bytes.Contains(bytes.ToLower(body), []byte(`\u0000`)) {
				writeError(w, r, bad)
				return
			}
			if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				if form, err := url.ParseQuery(string(body)); err == nil {
					for _, vs := range form {
						if !allValid(vs) {
							writeError(w, r, bad)
							return
						}
					}
				}
			}
			r.Body = replayable{bytes.NewReader(body)}
		}
		next.ServeHTTP(w, r)
	})
}

// replayable is a request body read into memory, which rewind takes back to its start: a tenant's
// transaction that failed before anything of it ran may be run once more elsewhere (postgres.DB.InTenant
// on Citus), and its second run reads the body again.
type replayable struct{ *bytes.Reader }

func (replayable) Close() error { return nil }

// rewind takes a request's body back to its start, if it is replayable.
func rewind(r *http.Request) {
	if b, ok := r.Body.(replayable); ok {
		_, _ = b.Seek(0, io.SeekStart)
	}
}

func allValid(vs []string) bool {
	for _, v := range vs {
		if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return false
		}
	}
	return true
}

// writeError answers an error before a tenant's handlers run: JSON for the API, a page otherwise.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if isAPI(r) {
		writeAPIError(w, err)
		return
	}
	(&view{Page: "error", Title: http.StatusText(statusOf(app.ErrorCode(err))), Error: app.ErrorMessage(err),
		status: statusOf(app.ErrorCode(err))}).write(w, r)
}

type passwordHashKey struct{}

// hashingPassword wraps a handler that creates a user, so that the new password is hashed before the
// handler's transaction and not while it holds a pooled connection. Only a signed-in admin's request is
// hashed (one short transaction checks that first): nobody else can make the app spend argon2id's time
// and memory. The handler finds the hash with passwordHashOf.
func (s *Server) hashingPassword(next http.HandlerFunc, api bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.credentials(r, api) {
			next(w, r) // answered as unauthenticated there
			return
		}
		var admin bool
		err := s.cfg.DB.InTenant(r.Context(), tenantOf(r), func(tx *postgres.Tx) error {
			u, err := s.caller(r.Context(), tx, r, api)
			admin = err == nil && u.IsAdmin()
			return nil
		})
		if err != nil || !admin {
			next(w, r) // the handler's own transaction answers with the error
			return
		}
		plain := r.FormValue("password")
		if api {
			var in struct{ Password string }
			body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
			r.Body = replayable{bytes.NewReader(body)}
			_ = json.Unmarshal(body, &in)
			plain = in.Password
		}
		if len(plain) >= password.MinLength {
			done, err := s.hashes.take(r.Context())
			if err != nil {
				s.fail(w, r, err)
				return
			}
			hash, err := password.Hash(plain)
			done()
			if err != nil {
				s.fail(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), passwordHashKey{}, hash))
		}
		next(w, r)
	}
}

// passwordHashOf is the hash hashingPassword made of the request's password, if any.
func passwordHashOf(r *http.Request) string {
	h, _ := r.Context().Value(passwordHashKey{}).(string)
	return h
}

// clientIP is the address of the client a request comes from, the key of sign-in rate limits. It is the
// peer's address, unless the peer is a trusted proxy (Config.TrustedProxies, e.g. the ingress
// controller's pods): then it is the nearest address in X-Forwarded-For that is not a trusted proxy
// itself. Without trusted proxies every client behind an ingress would share the ingress's address.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := forwardedAddr(hops[i])
		if err != nil {
			break // a malformed entry: trust nothing before it
		}
		if !s.trusted(hop) {
			return hop.String()
		}
	}
	return host
}

// forwardedAddr is the address of one X-Forwarded-For entry, which some proxies write with a port
// ("203.0.113.7:5123", "[2001:db8::7]:443").
func forwardedAddr(entry string) (netip.Addr, error) {
	entry = strings.TrimSpace(entry)
	if a, err := netip.ParseAddr(entry); err == nil {
		return a, nil
	}
	ap, err := netip.ParseAddrPort(entry)
	return ap.Addr(), err
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseCIDRs parses a comma-separated list of CIDRs (or single addresses), for --trusted-proxies.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// methodLabel bounds the method label of metrics: a client may send any method it likes.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodOptions:
		return m
	}
	return "other"
}

// slots bound how many requests do one costly thing at once: hash or check a password (argon2id holds
// 19 MiB while it runs), or build a CSV export (every row in memory). Whatever the number of requests,
// the app's memory for them is bounded. A request that finds no slot free waits, holding no database
// connection, for at most slotWait, then gets a 503 with Retry-After.
type slots chan struct{}

// slotWait is how long a request waits for a slot.
var slotWait = 5 * time.Second

func newSlots(n int) slots { return make(slots, n) }

// take waits for a free slot; the function it returns gives it back.
func (s slots) take(ctx context.Context) (func(), error) {
	timer := time.NewTimer(slotWait)
	defer timer.Stop()
	select {
	case s <- struct{}{}:
		return func() { <-s }, nil
	case <-timer.C:
	case <-ctx.Done(): // the client is gone
	}
	return nil, app.Errorf(app.EUNAVAILABLE, "The server is busy. Try again in a moment.")
}

// bounded runs a handler once it holds one of the slots.
func (s *Server) bounded(sl slots, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		done, err := sl.take(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		defer done()
		next(w, r)
	}
}
