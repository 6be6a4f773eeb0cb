package tenantdb

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// scramIterations is PostgreSQL's own default (scram_iterations).
const scramIterations = 4096

// passwordVerifier is what PostgreSQL stores for a password under SCRAM-SHA-256, computed here: ALTER
// ROLE ... PASSWORD is sent the verifier, never the password, so the password appears in no server
// log and no statement view. (A password made only of printable ASCII, as the operator's are, is its
// own SASLprep.)
func passwordVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	return scramVerifier(password, salt, scramIterations)
}

// scramVerifier is the SCRAM-SHA-256 verifier of a password with the salt and iterations given.
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
}

// randomPassword is a new password for a login only the operator uses: 192 random bits.
func randomPassword() string {
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// passwordClause is "PASSWORD '<verifier>'" for ALTER ROLE.
func passwordClause(password string) (string, error) {
	v, err := passwordVerifier(password)
	if err != nil {
		return "", err
	}
	return "PASSWORD " + quoteLiteral(v), nil
}
