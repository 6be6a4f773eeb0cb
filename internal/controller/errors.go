package controller

import (
	"errors"
	"fmt"
	"time"

	"tenantry.dev/tenantry/internal/pgerr"
)

// How a failed step wants to be retried. Flux's habit: the error says what it means for the object.
type errorKind int

const (
	// retry: something transient (the database dropped a connection); back off exponentially.
	retry errorKind = iota
	// wait: a dependency is missing (the ExpenseApp, its Secret); check again later or on a watch event.
	wait
	// stall: the spec or the data is wrong and retrying will not help until a person changes something.
	stall
	// pending: routine work elsewhere (a fleet rollout) will bring this object along; look again later
	// and change no condition meanwhile: a Ready object stays Ready.
	pending
)

// stepError is a failed step with the condition reason and message a person reads in status.
type stepError struct {
	kind   errorKind
	reason string
	err    error
	after  time.Duration // requeue delay for wait and stall
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// retryErr is a transient failure. A statement the database cancelled at one of the operator's
// timeouts says so (pgerr.TimeoutError).
func retryErr(reason string, err error) error {
	return &stepError{kind: retry, reason: reason, err: pgerr.ExplainTimeout(err)}
}

func waitErr(reason string, after time.Duration, format string, args ...any) error {
	return &stepError{kind: wait, reason: reason, err: fmt.Errorf(format, args...), after: after}
}

func pendingErr(after time.Duration, format string, args ...any) error {
	return &stepError{kind: pending, reason: "", err: fmt.Errorf(format, args...), after: after}
}

func stallErr(reason string, after time.Duration, err error) error {
	return &stepError{kind: stall, reason: reason, err: err, after: after}
}

// asStepError classifies any error; an unclassified one is transient.
func asStepError(err error, fallbackReason string) *stepError {
	var se *stepError
	if errors.As(err, &se) {
		return se
	}
	return &stepError{kind: retry, reason: fallbackReason, err: err}
}
