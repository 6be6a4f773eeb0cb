package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/internal/password"
)

const userColumns = `id, email, name, role, active, department_id, created_at`

func scanUser(row pgx.CollectableRow) (*app.User, error) {
	u := &app.User{}
	return u, row.Scan(&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.DepartmentID, &u.CreatedAt)
}

// Credentials returns the user of an email with their password hash, for a sign-in. The hash is
// checked after the transaction, by CheckPassword: argon2id takes tens of milliseconds and a lot of
// memory, and must not hold a pooled connection while it runs. An unknown email is app.EUNAUTHORIZED.
func (tx *Tx) Credentials(ctx context.Context, email string) (*app.User, string, error) {
	var hash string
	u := &app.User{}
	err := tx.QueryRow(ctx, `SELECT `+userColumns+`, password_hash FROM users WHERE lower(email) = lower($1)`, email).
		Scan(&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.DepartmentID, &u.CreatedAt, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", wrongLogin
	}
	if err != nil {
		return nil, "", err
	}
	return u, hash, nil
}

var wrongLogin = app.Errorf(app.EUNAUTHORIZED, "Wrong email or password.")

// CheckPassword checks a sign-in against what Credentials returned (u nil: no such user, which takes
// the time a real check would, so timing does not reveal unknown emails). It returns a fresh hash when
// the stored one should be replaced (older parameters), to be saved with SetPasswordHash.
func CheckPassword(u *app.User, hash, plain string) (rehash string, err error) {
	if u == nil {
		_, _ = password.Check(plain, dummyHash)
		return "", wrongLogin
	}
	ok, err := password.Check(plain, hash)
	if err != nil || !ok || !u.Active {
		return "", wrongLogin
	}
	if password.NeedsRehash(hash) {
		if fresh, err := password.Hash(plain); err == nil {
			return fresh, nil
		}
	}
	return "", nil
}

// SetPasswordHash stores a user's new password hash.
func (tx *Tx) SetPasswordHash(ctx context.Context, id int64, hash string) error {
	_, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE id = $1`, id, hash)
	return err
}

var dummyHash, _ = password.Hash("not a password anybody has")

// User returns a user by id.
func (tx *Tx) User(ctx context.Context, id int64) (*app.User, error) {
	rows, _ := tx.Query(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id)
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	return u, notFound(err, "User")
}

// Users lists every user.
func (tx *Tx) Users(ctx context.Context) ([]*app.User, error) {
	rows, _ := tx.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY lower(email)`)
	return pgx.CollectRows(rows, scanUser)
}

// UserInput is what an admin enters for a user.
type UserInput struct {
	Email    string `json:"email"`
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password,omitempty"`
	// PasswordHash is Password hashed (HashPassword), before the transaction that creates the user.
	PasswordHash string `json:"-"`
	DepartmentID *int64 `json:"departmentId,omitempty"`
	Active       *bool  `json:"active,omitempty"`
}

func (in *UserInput) validate(creating bool) error {
	in.Email = strings.TrimSpace(in.Email)
	switch {
	case creating && (!strings.Contains(in.Email, "@") || len(in.Email) > 254):
		return app.Errorf(app.EINVALID, "Enter a valid email address.")
	case in.Role != app.RoleAdmin && in.Role != app.RoleMember:
		return app.Errorf(app.EINVALID, "The role must be admin or member.")
	case creating && len(in.Password) < password.MinLength:
		return app.Errorf(app.EINVALID, "The password must be at least %d characters.", password.MinLength)
	case len(in.Name) > 200:
		return app.Errorf(app.EINVALID, "The name is too long.")
	}
	return nil
}

// CreateUser adds a user with the password hash in.PasswordHash (hashed before the transaction: see
// Credentials).
func (tx *Tx) CreateUser(ctx context.Context, in UserInput) (*app.User, error) {
	if err := in.validate(true); err != nil {
		return nil, err
	}
	if in.PasswordHash == "" {
		return nil, errors.New("creating a user: the password was not hashed before the transaction")
	}
	rows, _ := tx.Query(ctx, `INSERT INTO users (email, name, role, password_hash, department_id)
VALUES ($1, $2, $3, $4, $5) RETURNING `+userColumns, in.Email, in.Name, in.Role, in.PasswordHash, in.DepartmentID)
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	return u, constraint(err, map[string]string{"users_email_key": "A user with that email exists."})
}

// UpdateUser changes a user's name, role, department and whether they are active. An admin cannot take
// away the last active admin.
func (tx *Tx) UpdateUser(ctx context.Context, id int64, in UserInput) (*app.User, error) {
	if err := in.validate(false); err != nil {
		return nil, err
	}
	active := true
	if in.Active != nil {
		active = *in.Active
	}
	rows, _ := tx.Query(ctx, `UPDATE users SET name = $2, role = $3, department_id = $4, active = $5
WHERE id = $1 RETURNING `+userColumns, id, in.Name, in.Role, in.DepartmentID, active)
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if err != nil {
		return nil, notFound(constraint(err, nil), "User")
	}
	var admins int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM users WHERE role = 'admin' AND active`).Scan(&admins); err != nil {
		return nil, err
	}
	if admins == 0 {
		return nil, app.Errorf(app.ECONFLICT, "The tenant needs at least one active admin.")
	}
	if !active {
		if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1`, id); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// newToken returns a random token and the hash under which it is stored: a stolen database dump holds
// no usable sessions or API tokens.
func newToken() (token string, hash []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateSession signs a user in and returns the session token for the cookie.
func (tx *Tx) CreateSession(ctx context.Context, userID int64, ttl time.Duration) (string, error) {
	token, hash := newToken()
	_, err := tx.Exec(ctx, `INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, now() + $3::interval)`,
		hash, userID, ttl.String())
	return token, err
}

// SessionUser returns the active user of an unexpired session.
func (tx *Tx) SessionUser(ctx context.Context, token string) (*app.User, error) {
	rows, _ := tx.Query(ctx, `SELECT u.id, u.email, u.name, u.role, u.active, u.department_id, u.created_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.expires_at > now() AND u.active`, hashToken(token))
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Please sign in.")
	}
	return u, err
}

// DeleteSession signs a session out.
func (tx *Tx) DeleteSession(ctx context.Context, token string) error {
	_, err := tx.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1 OR expires_at < now()`, hashToken(token))
	return err
}

// APIToken is a personal access token; the secret is shown once, at creation.
type APIToken struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Token     string     `json:"token,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	LastUsed  *time.Time `json:"lastUsedAt,omitempty"`
}

// CreateAPIToken makes a personal API token for a user.
func (tx *Tx) CreateAPIToken(ctx context.Context, userID int64, name string) (*APIToken, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return nil, app.Errorf(app.EINVALID, "Give the token a name of up to 100 characters.")
	}
	token, _ := newToken()
	t := &APIToken{Name: name, Token: "tny_" + token}
	err := tx.QueryRow(ctx, `INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, $2, $3) RETURNING id, created_at`,
		userID, name, hashToken(t.Token)).Scan(&t.ID, &t.CreatedAt)
	return t, err
}

// TokenUser returns the active user of an unrevoked API token. Its last use is recorded at most once a
// minute: a write on every request would make all requests of one token queue for the same row lock.
func (tx *Tx) TokenUser(ctx context.Context, token string) (*app.User, error) {
	var tokenID int64
	var stale bool
	u := &app.User{}
	err := tx.QueryRow(ctx, `SELECT t.id, coalesce(t.last_used_at < now() - interval '1 minute', true),
       u.id, u.email, u.name, u.role, u.active, u.department_id, u.created_at
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active`, hashToken(token)).
		Scan(&tokenID, &stale, &u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.DepartmentID, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, app.Errorf(app.EUNAUTHORIZED, "The API token is not valid.")
	}
	if err != nil {
		return nil, err
	}
	if stale {
		// SKIP LOCKED: if another request is recording the use right now, that one will do.
		if _, err := tx.Exec(ctx, `UPDATE api_tokens SET last_used_at = now() WHERE id IN
    (SELECT id FROM api_tokens WHERE id = $1 FOR UPDATE SKIP LOCKED)`, tokenID); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// RevokeAPIToken revokes one of a user's tokens.
func (tx *Tx) RevokeAPIToken(ctx context.Context, userID, id int64) error {
	tag, err := tx.Exec(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL`, id, userID)
	if err == nil && tag.RowsAffected() == 0 {
		return app.Errorf(app.ENOTFOUND, "Token not found.")
	}
	return err
}

// APITokens lists a user's unrevoked tokens (without their secrets).
func (tx *Tx) APITokens(ctx context.Context, userID int64) ([]*APIToken, error) {
	rows, _ := tx.Query(ctx, `SELECT id, name, created_at, last_used_at FROM api_tokens
WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC`, userID)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*APIToken, error) {
		t := &APIToken{}
		return t, row.Scan(&t.ID, &t.Name, &t.CreatedAt, &t.LastUsed)
	})
}
