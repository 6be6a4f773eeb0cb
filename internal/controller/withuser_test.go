package controller

import (
	"strings"
	"testing"
)

// The app's connection string is the admin's with the app's own user and password: nothing of the
// admin's credentials survives, wherever the admin string carried them.
func TestWithUser(t *testing.T) {
	for _, admin := range []string{
		"postgres://admin:s3cret@db.example.com:5432/expenses?sslmode=require",
		"postgres://db.example.com/expenses?user=admin&password=s3cret&sslmode=require",
		"postgresql://db.example.com/expenses?sslmode=require&Password=s3cret&passfile=/etc/s3cret&sslpassword=s3cret",
	} {
		got, err := withUser(admin, "app", "apppw")
		if err != nil {
			t.Fatalf("withUser(%q): %v", admin, err)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "admin") {
			t.Errorf("withUser(%q) = %q: the admin's credentials leak", admin, got)
		}
		if !strings.Contains(got, "//app:apppw@db.example.com") || !strings.Contains(got, "sslmode=require") {
			t.Errorf("withUser(%q) = %q: want the app's user on the same server, other settings kept", admin, got)
		}
	}
	if _, err := withUser("host=db user=admin", "app", "pw"); err == nil {
		t.Error("a key=value string should be refused: the app's login cannot be derived from it")
	}
}
