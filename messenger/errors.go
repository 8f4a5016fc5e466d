package messenger

import (
	"errors"
	"fmt"
)

// Meta's error codes and subcodes that threadctl acts on
// (reference/meta-handover-protocol.md §8).
const (
	CodeTransient     = 2
	CodeAppRateLimit  = 4
	CodePermission    = 10
	CodeInvalidParam  = 100
	CodeInvalidToken  = 190
	CodePermissions   = 200
	CodeRateLimit     = 613
	SubcodeNotOwner   = 2534037 // with code 100: "not the thread owner"
	SubcodeSendDenied = 2018300 // with code 10: "another app is controlling this thread"
	SubcodeLeadgen    = 2018321 // with code 10: an automated flow owns the thread
)

// Error is an error answered by the Graph API: Meta's envelope
// {"error":{"message","type","code","error_subcode","fbtrace_id"}} together
// with the HTTP status it came with.
type Error struct {
	HTTPStatus  int    `json:"-"`
	Message     string `json:"message"`
	Type        string `json:"type"`
	Code        int    `json:"code"`
	Subcode     int    `json:"error_subcode"`
	IsTransient bool   `json:"is_transient"`
	FBTraceID   string `json:"fbtrace_id"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("graph api: HTTP %d, code %d", e.HTTPStatus, e.Code)
	if e.Subcode != 0 {
		s += fmt.Sprintf("/%d", e.Subcode)
	}
	s += ": " + e.Message
	if e.FBTraceID != "" {
		s += " (fbtrace_id " + e.FBTraceID + ")"
	}
	return s
}

// UnansweredError is the error of a call whose last attempt Meta answered
// with an error, after an earlier attempt got no answer (a network error, a
// timeout): Meta may have applied that attempt, so the call's outcome is
// unknown, whatever the last answer says. A retried pass_thread_control that
// Meta refuses because the first attempt already passed the thread is the
// case it exists for. It unwraps to Meta's last answer.
type UnansweredError struct {
	Unanswered error // the earlier attempt's error
	Last       error // Meta's answer to the last attempt
}

func (e *UnansweredError) Error() string {
	return fmt.Sprintf("an attempt got no answer (%v), then %v", e.Unanswered, e.Last)
}

func (e *UnansweredError) Unwrap() error { return e.Last }

// Transient is true: the call's outcome is unknown, as for a call that got
// no answer at all.
func (e *UnansweredError) Transient() bool { return true }

// OutcomeUnknown is true: an attempt may have been applied.
func (e *UnansweredError) OutcomeUnknown() bool { return true }

// NotThreadOwner reports whether Meta refused the call because another app
// controls the thread: 10/2018300, 10/2018321 or 100/2534037.
func (e *Error) NotThreadOwner() bool {
	switch {
	case e.Code == CodePermission && (e.Subcode == SubcodeSendDenied || e.Subcode == SubcodeLeadgen):
		return true
	case e.Code == CodeInvalidParam && e.Subcode == SubcodeNotOwner:
		return true
	}
	return false
}

// PermissionDenied reports whether Meta refused the call because the page's
// setup does not allow it to this app: "Permissions error" (code 200), or
// code 10 without a thread-owner subcode. On Conversation Routing pages this
// is how a request for control (refused on pages with a default app) or a
// take without the takeover setting is refused; Meta does not document the
// exact code, and both forms are seen.
func (e *Error) PermissionDenied() bool {
	return e.Code == CodePermissions || (e.Code == CodePermission && !e.NotThreadOwner())
}

// RevealsOwner reports whether Meta refused the call for a reason a fresh
// look at the thread's owner may explain: another app controls it
// (NotThreadOwner), or an invalid request about the thread (code 100: "your
// app is already the thread owner", "not the thread owner"). Meta gives most
// of these no subcode, so the caller asks thread_owner rather than reading
// the message.
func (e *Error) RevealsOwner() bool { return e.NotThreadOwner() || e.Code == CodeInvalidParam }

// Transient reports whether the call may succeed if made again: Meta's
// server errors, transient errors and rate limits. Other errors are Meta's
// answer. (A call that got no answer at all — a network error, a timeout —
// is transient too, but is not an *Error.)
func (e *Error) Transient() bool { return e.retryable() }

// RateLimited reports whether Meta refused the call for rate limiting (613 or 4).
func (e *Error) RateLimited() bool { return e.Code == CodeRateLimit || e.Code == CodeAppRateLimit }

// retryable reports whether the same call may succeed if sent again: server
// errors, Meta's transient errors and rate limiting; never other 4xx.
func (e *Error) retryable() bool {
	return e.HTTPStatus >= 500 || e.IsTransient || e.Code == CodeTransient || e.RateLimited()
}

// IsNotThreadOwner reports whether err is Meta saying another app owns the thread.
func IsNotThreadOwner(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotThreadOwner()
}

// IsRateLimited reports whether err is Meta's rate limiting.
func IsRateLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.RateLimited()
}
