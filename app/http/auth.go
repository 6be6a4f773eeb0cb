package http

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

// handler runs inside the tenant's transaction with the signed-in user and returns what to answer,
// which is written after the transaction commits.
type handler func(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error)

// response is written once the transaction has committed.
type response interface {
	write(w http.ResponseWriter, r *http.Request)
}

// redirect answers 303 See Other, the answer to a form post.
type redirect string

func (to redirect) write(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, string(to), http.StatusSeeOther)
}

// formError re-shows a form with the error's message; the transaction is rolled back.
type formError struct {
	view *view
	err  error
}

func (e *formError) Error() string { return e.err.Error() }

// reshow answers a failed form post with its page again, showing err; when the page itself cannot be
// built, err is answered as it is.
func reshow(err error, page func() (*view, error)) error {
	v, verr := page()
	if verr != nil {
		return err
	}
	return &formError{view: v, err: err}
}
func (e *formError) Unwrap() error { return e.err }

func (s *Server) cookieName() string {
	if s.cfg.SecureCookies {
		return "__Host-tenantry_session" // the prefix makes browsers insist on Secure, Path=/ and no Domain
	}
	return "tenantry_session"
}

// page wraps an HTML handler: it needs a session, else it sends the browser to the sign-in page.
func (s *Server) page(h handler) http.HandlerFunc {
	return s.authenticated(h, false, false)
}

// admin wraps an HTML handler only admins may use.
func (s *Server) admin(h handler) http.HandlerFunc {
	return s.authenticated(h, true, false)
}

// api wraps a JSON handler: a Bearer token or a session.
func (s *Server) api(h handler) http.HandlerFunc {
	return s.authenticated(h, false, true)
}

func adminOnly(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, tx *postgres.Tx, u *app.User) (response, error) {
		if !u.IsAdmin() {
			return nil, app.Errorf(app.EFORBIDDEN, "Only admins can do that.")
		}
		return h(w, r, tx, u)
	}
}

// credentials says whether a request carries a session or token to check.
func (s *Server) credentials(r *http.Request, api bool) bool {
	_, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	_, err := r.Cookie(s.cookieName())
	return (api && hasBearer) || err == nil
}

// caller is the signed-in user of a request: by API token (API routes), else by session cookie.
func (s *Server) caller(ctx context.Context, tx *postgres.Tx, r *http.Request, api bool) (*app.User, error) {
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); api && ok {
		return tx.TokenUser(ctx, strings.TrimSpace(bearer))
	}
	cookie, err := r.Cookie(s.cookieName())
	if err != nil {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Sign in first.")
	}
	return tx.SessionUser(ctx, cookie.Value)
}

func (s *Server) authenticated(h handler, adminRequired, api bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := tenantOf(r)
		if !s.credentials(r, api) {
			s.unauthenticated(w, r, api)
			return
		}
		var resp response
		err := s.cfg.DB.InTenant(r.Context(), t, func(tx *postgres.Tx) error {
			rewind(r)
			u, err := s.caller(r.Context(), tx, r, api)
			if err != nil {
				return err
			}
			if adminRequired && !u.IsAdmin() {
				return app.Errorf(app.EFORBIDDEN, "Only admins can see this page.")
			}
			resp, err = h(w, r, tx, u)
			return err
		})
		var fe *formError
		switch {
		case err == nil:
			resp.write(w, r)
		case errors.As(err, &fe) && app.ErrorCode(fe.err) != app.EINTERNAL:
			fe.view.Error = app.ErrorMessage(fe.err)
			fe.view.status = statusOf(app.ErrorCode(fe.err))
			fe.view.write(w, r)
		case app.ErrorCode(err) == app.EUNAUTHORIZED:
			s.unauthenticated(w, r, api)
		default:
			s.fail(w, r, err)
		}
	}
}

func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request, api bool) {
	if api {
		writeAPIError(w, app.Errorf(app.EUNAUTHORIZED, "Sign in, or send an API token as 'Authorization: Bearer <token>'."))
		return
	}
	if r.Method == http.MethodGet {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	s.fail(w, r, app.Errorf(app.EUNAUTHORIZED, "Your session has ended. Please sign in again."))
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	(&view{Page: "login", Title: "Sign in", Data: map[string]string{"Next": safeNext(r.FormValue("next"))}}).write(w, r)
}

// checkPassword is postgres.CheckPassword; a test watches, through it, what the sign-in holds while
// argon2id runs.
var checkPassword = postgres.CheckPassword

// maxEmail is the longest email address there is (RFC 5321's path limit, less its brackets).
const maxEmail = 254

// login signs a user in. Failed attempts slow further ones down, per client address and per account,
// or per device for a browser that signed in to the account before (signInGuard).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	t := tenantOf(r)
	email, pass := strings.TrimSpace(r.FormValue("email")), r.FormValue("password")
	next := safeNext(r.FormValue("next"))
	again := &view{Page: "login", Title: "Sign in", Data: map[string]string{"Next": next, "Email": email}}
	// Behind trusted proxies the address is the client's, not the ingress's.
	var device string
	if c, err := r.Cookie(s.deviceCookieName()); err == nil {
		device = c.Value
	}
	if len(email) > maxEmail { // no account has one; and what the guard keeps stays small
		again.Error, again.status = "Wrong email or password.", http.StatusUnauthorized
		again.write(w, r)
		return
	}
	keys, clear := s.guard.keysOf(t.Schema, s.clientIP(r), email, device)
	if wait := s.guard.admit(keys); wait > 0 {
		w.Header().Set("Retry-After", retryAfter(wait))
		again.Error = "Too many failed sign-ins. Wait " + retryAfter(wait) + " s and try again."
		again.status = http.StatusTooManyRequests
		again.write(w, r)
		return
	}
	// Two short transactions with the password check between them: argon2id never runs while a pooled
	// connection is held, so a flood of sign-ins cannot take the connections other requests need.
	var u *app.User
	var hash, token string
	err := s.cfg.DB.InTenant(r.Context(), t, func(tx *postgres.Tx) error {
		var err error
		u, hash, err = tx.Credentials(r.Context(), email)
		if app.ErrorCode(err) == app.EUNAUTHORIZED {
			u, err = nil, nil
		}
		return err
	})
	var done func()
	if err == nil {
		done, err = s.hashes.take(r.Context())
	}
	if err == nil {
		var rehash string
		rehash, err = checkPassword(u, hash, pass)
		done()
		if err == nil {
			err = s.cfg.DB.InTenant(r.Context(), t, func(tx *postgres.Tx) error {
				if rehash != "" {
					if err := tx.SetPasswordHash(r.Context(), u.ID, rehash); err != nil {
						return err
					}
				}
				var err error
				token, err = tx.CreateSession(r.Context(), u.ID, s.cfg.SessionTTL)
				return err
			})
		}
	}
	if err != nil && app.ErrorCode(err) != app.EUNAUTHORIZED {
		s.guard.refund(keys, nil) // not a failed guess: the server was busy, or away
	}
	if err != nil {
		if app.ErrorCode(err) == app.EINTERNAL {
			s.fail(w, r, err)
			return
		}
		again.Error, again.status = app.ErrorMessage(err), statusOf(app.ErrorCode(err))
		again.write(w, r)
		return
	}
	s.guard.refund(keys, clear)
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: token, Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(s.cfg.SessionTTL.Seconds()),
	})
	s.setDeviceCookie(w, t.Schema, email)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(s.cookieName()); err == nil {
		err := s.cfg.DB.InTenant(r.Context(), tenantOf(r), func(tx *postgres.Tx) error {
			return tx.DeleteSession(r.Context(), c.Value)
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a post-sign-in redirect on this host: a path, and nothing a browser could read as
// another host. Browsers drop tabs and newlines from URLs and read a backslash as '/', so "/<tab>/evil.com"
// and "/<backslash>evil.com" are "//evil.com" to them; any control character, space or backslash is refused.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.ContainsFunc(next, func(c rune) bool { return c <= ' ' || c == 0x7f || c == '\\' }) {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}
