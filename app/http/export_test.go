package http

import "tenantry.dev/tenantry/app"

// WatchPasswordChecks calls watch as each sign-in's password check begins, and returns the function
// that stops watching.
func WatchPasswordChecks(watch func()) (stop func()) {
	orig := checkPassword
	checkPassword = func(u *app.User, hash, plain string) (string, error) {
		watch()
		return orig(u, hash, plain)
	}
	return func() { checkPassword = orig }
}
