package http

import (
	"time"

	"tenantry.dev/tenantry/app"
)

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

// SetSlotWait sets how long a request waits for a slot of costly work, and returns the function that
// sets it back.
func SetSlotWait(d time.Duration) (restore func()) {
	orig := slotWait
	slotWait = d
	return func() { slotWait = orig }
}

// SetSignInClock makes the sign-in guard of s read the time from now.
func SetSignInClock(s *Server, now func() time.Time) {
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	s.guard.now = now
}
