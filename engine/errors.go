package engine

import (
	"errors"
	"fmt"
)

// Code classifies an engine error for its callers; the server maps each code
// to an HTTP status in one table.
type Code string

// Error codes.
const (
	CodeInvalid     Code = "invalid"     // a bad input
	CodeNotFound    Code = "not_found"   // an unknown identity, page, intervention or content
	CodeConflict    Code = "conflict"    // the machine refuses the event now
	CodeMeta        Code = "meta"        // Meta refused or failed the Graph call
	CodeUnavailable Code = "unavailable" // the store failed
)

// Error is an engine error: a machine code and a message that says what was
// wrong and what to do.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, if any (a *messenger.Error for CodeMeta)
}

func (e *Error) Error() string {
	if e.Err != nil && e.Code != CodeConflict && e.Code != CodeNotFound {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// ErrorCode returns the code of an engine error, "" for nil, and
// CodeUnavailable for any other error.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeUnavailable
}

// notOwner reports whether a Graph error says another app owns the thread.
func notOwner(err error) bool {
	var e interface{ NotThreadOwner() bool }
	return errors.As(err, &e) && e.NotThreadOwner()
}

// revealsOwner reports whether a Graph error is a refusal that a fresh look
// at the thread's owner may explain (see messenger.Error.RevealsOwner).
func revealsOwner(err error) bool {
	var e interface{ RevealsOwner() bool }
	return errors.As(err, &e) && e.RevealsOwner()
}

// transient reports whether a Graph call's outcome is unknown or may change
// if it is made again: no answer (network error, timeout), or Meta's server
// errors and rate limits. Meta's refusals are not transient.
func transient(err error) bool {
	var e interface{ Transient() bool }
	if errors.As(err, &e) {
		return e.Transient()
	}
	var ee *Error
	return err != nil && !errors.As(err, &ee)
}

// permissionDenied reports whether a Graph error says the page does not
// allow the call to RingCX (see messenger.Error.PermissionDenied).
func permissionDenied(err error) bool {
	var e interface{ PermissionDenied() bool }
	return errors.As(err, &e) && e.PermissionDenied()
}

// storeError wraps a store failure that is not a domain answer.
func storeError(err error, doing string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, ErrConflict) {
		return errorf(CodeConflict, err, "%s: the thread changed concurrently; retry", doing)
	}
	return errorf(CodeUnavailable, err, "%s: the store is unavailable; retry later", doing)
}
