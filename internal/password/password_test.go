package password

import (
	"strings"
	"testing"
)

func TestHashAndCheck(t *testing.T) {
	h, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not argon2id with the expected parameters", h)
	}
	if ok, err := Check("correct horse battery staple", h); err != nil || !ok {
		t.Fatalf("Check(right password) = %v, %v; want true", ok, err)
	}
	if ok, err := Check("correct horse battery stapler", h); err != nil || ok {
		t.Fatalf("Check(wrong password) = %v, %v; want false", ok, err)
	}
	if _, err := Check("x", "not-a-hash"); err == nil {
		t.Fatal("Check accepted a malformed hash")
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p := Generate(20)
		if len(p) != 20 {
			t.Fatalf("len(%q) = %d, want 20", p, len(p))
		}
		for _, c := range p {
			if !strings.ContainsRune(alphabet, c) {
				t.Fatalf("%q has %q, outside the alphabet", p, c)
			}
		}
		if seen[p] {
			t.Fatalf("Generate repeated %q", p)
		}
		seen[p] = true
	}
}

func TestHashGeneratedAndRehash(t *testing.T) {
	plain := Generate(20)
	h, err := HashGenerated(plain)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := Check(plain, h); err != nil || !ok {
		t.Fatalf("Check(generated) = %v, %v", ok, err)
	}
	if !NeedsRehash(h) {
		t.Fatal("a generated-password hash should be re-hashed with the full parameters at sign-in")
	}
	full, _ := Hash(plain)
	if NeedsRehash(full) {
		t.Fatal("a hash with today's parameters needs no re-hash")
	}
	if !NeedsRehash("garbage") {
		t.Fatal("an unreadable hash must be replaced")
	}
}

// go test -bench . ./internal/password: the cost of a person's password and of a generated one.
func BenchmarkHash(b *testing.B) {
	for b.Loop() {
		if _, err := Hash("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHashGenerated(b *testing.B) {
	p := Generate(20)
	for b.Loop() {
		if _, err := HashGenerated(p); err != nil {
			b.Fatal(err)
		}
	}
}
