package sim

import (
	"fmt"
	"net/http"
	"strings"
)

// graphError is one of Meta's Graph API errors, answered in Meta's envelope.
type graphError struct {
	status    int
	message   string
	typ       string
	code      int
	subcode   int
	transient bool
}

func (e *graphError) Error() string {
	return fmt.Sprintf("graph error %d/%d: %s", e.code, e.subcode, e.message)
}

// wireErrorEnvelope is Meta's error body (reference §3.3).
type wireErrorEnvelope struct {
	Error wireError `json:"error"`
}

type wireError struct {
	Message     string `json:"message"`
	Type        string `json:"type"`
	Code        int    `json:"code"`
	Subcode     int    `json:"error_subcode,omitempty"`
	IsTransient bool   `json:"is_transient,omitempty"`
	FBTraceID   string `json:"fbtrace_id"`
}

func (e *graphError) envelope() wireErrorEnvelope {
	return wireErrorEnvelope{Error: wireError{
		Message:     e.message,
		Type:        e.typ,
		Code:        e.code,
		Subcode:     e.subcode,
		IsTransient: e.transient,
		FBTraceID:   newTraceID(),
	}}
}

const (
	typeOAuth  = "OAuthException"
	typeMethod = "GraphMethodException"
)

// oauthError is a documented Messenger error: HTTP 400, type OAuthException, message prefixed
// with "(#code) ".
func oauthError(code, subcode int, format string, args ...any) *graphError {
	return &graphError{
		status:  http.StatusBadRequest,
		message: fmt.Sprintf("(#%d) ", code) + fmt.Sprintf(format, args...),
		typ:     typeOAuth,
		code:    code,
		subcode: subcode,
	}
}

// errNotOwner is Meta's answer to a thread-control action by an app that does not own the
// thread (reference §8; suggested for every "not the owner" case in §4).
func errNotOwner() *graphError {
	return oauthError(100, 2534037, "The action is invalid since it's not the thread owner.")
}

// errSendBlocked is the Send API's answer when another app controls the thread (§7).
func errSendBlocked() *graphError {
	return oauthError(10, 2018300, "Message failed to send because another app is controlling this thread now.")
}

// errVisibility is thread_owner's answer to a hop_v1 secondary when another secondary owns
// the thread (§4.7).
func errVisibility() *graphError {
	return oauthError(100, 2018234, "Denying visibility of any secondary receiver to another secondary receiver other than itself.")
}

// errParam is an invalid or missing parameter (code 100).
func errParam(format string, args ...any) *graphError {
	return oauthError(100, 0, format, args...)
}

// errPermission is an action the caller's role or the page's mode does not allow. Meta does not
// document the exact error; the simulator uses code 200 ("Permissions error", listed for
// take_thread_control) with the reason spelled out.
func errPermission(format string, args ...any) *graphError {
	return oauthError(200, 0, "Permissions error: "+format, args...)
}

// errUnknownPath is Graph's answer for an edge that does not exist (or not in the page's mode).
func errUnknownPath(path string) *graphError {
	return &graphError{
		status:  http.StatusBadRequest,
		message: "Unknown path components: " + path,
		typ:     typeOAuth,
		code:    2500,
	}
}

func errBadToken() *graphError {
	return &graphError{
		status:  http.StatusBadRequest,
		message: "Invalid OAuth access token - Cannot parse access token",
		typ:     typeOAuth,
		code:    190,
	}
}

func errNoToken() *graphError {
	return &graphError{
		status:  http.StatusBadRequest,
		message: "An access token is required to request this resource.",
		typ:     typeOAuth,
		code:    104,
	}
}

func errBadProof() *graphError {
	return &graphError{
		status:  http.StatusBadRequest,
		message: "Invalid appsecret_proof provided in the API argument",
		typ:     typeMethod,
		code:    100,
	}
}

// errNoObject is Graph's answer for a node the token cannot reach, or a method an edge does not
// support.
func errNoObject(method, node string) *graphError {
	return &graphError{
		status: http.StatusBadRequest,
		message: fmt.Sprintf("Unsupported %s request. Object with ID '%s' does not exist, cannot be loaded "+
			"due to missing permissions, or does not support this operation. Please read the Graph API "+
			"documentation at https://developers.facebook.com/docs/graph-api", strings.ToLower(method), node),
		typ:     typeMethod,
		code:    100,
		subcode: 33,
	}
}

// errTransient is Graph's generic server-side error (used by injected 5xx faults).
func errTransient(status int) *graphError {
	return &graphError{
		status:    status,
		message:   "An unexpected error has occurred. Please retry your request later.",
		typ:       typeOAuth,
		code:      2,
		transient: true,
	}
}
