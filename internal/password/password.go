// Package password hashes and checks passwords for the operator (the first admin of a tenant) and the
// app (every sign-in), so both always agree on the format: argon2id in the PHC string encoding.
package password

import (
	"crypto/rand"
	"fmt"

	"github.com/alexedwards/argon2id"
)

// params follow OWASP's argon2id recommendation (19 MiB, 2 iterations, 1 lane): strong enough for
// people's passwords while keeping a sign-in, and a tenant's admin bootstrap, well under 100 ms.
var params = &argon2id.Params{
	Memory:      19 * 1024,
	Iterations:  2,
	Parallelism: 1,
	SaltLength:  16,
	KeyLength:   32,
}

// generatedParams hash passwords this package generated itself. Their cost is low on purpose: the
// work factor of a password hash is there to slow the guessing of passwords people choose, and a
// Generate(20) password holds about 116 random bits, which no work factor makes more or less guessable.
// It keeps a tenant's admin bootstrap to a millisecond; the app re-hashes with params once the admin
// signs in (NeedsRehash), and every password a person sets gets params from the start.
var generatedParams = &argon2id.Params{
	Memory:      1024,
	Iterations:  1,
	Parallelism: 1,
	SaltLength:  16,
	KeyLength:   32,
}

// MinLength is the shortest password the app accepts.
const MinLength = 10

// Hash returns the encoded argon2id hash of a password.
func Hash(plain string) (string, error) {
	h, err := argon2id.CreateHash(plain, params)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return h, nil
}

// HashGenerated hashes a password made by Generate, whose own randomness is its strength.
func HashGenerated(plain string) (string, error) {
	h, err := argon2id.CreateHash(plain, generatedParams)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return h, nil
}

// NeedsRehash reports whether an encoded hash was made with other parameters than Hash uses today; the
// app re-hashes such a password at the next successful sign-in.
func NeedsRehash(encoded string) bool {
	p, _, _, err := argon2id.DecodeHash(encoded)
	return err != nil || *p != *params
}

// Check reports whether plain matches an encoded hash. A malformed hash is an error, never a match.
func Check(plain, encoded string) (bool, error) {
	ok, err := argon2id.ComparePasswordAndHash(plain, encoded)
	if err != nil {
		return false, fmt.Errorf("checking password: %w", err)
	}
	return ok, nil
}

// alphabet leaves out look-alike characters so a generated password survives being read aloud.
const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// Generate returns a random password of n characters from a 56-letter alphabet (about 5.8 bits each).
func Generate(n int) string {
	b := make([]byte, n)
	for i := range b {
		// rand.Text would do, but its alphabet is upper-case only; crypto/rand.Int has no modulo bias.
		b[i] = alphabet[randIndex(len(alphabet))]
	}
	return string(b)
}

func randIndex(n int) int {
	var buf [1]byte
	limit := 256 - 256%n // reject values that would bias the modulo
	for {
		if _, err := rand.Read(buf[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if int(buf[0]) < limit {
			return int(buf[0]) % n
		}
	}
}
