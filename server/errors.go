package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
)

// Envelope is the body of every answer of the Bots API and of every error:
// the HTTP status repeated, and a message that says what was wrong and what
// to do.
type Envelope struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// statusOf maps engine error codes to HTTP statuses: the one table.
var statusOf = map[engine.Code]int{
	engine.CodeInvalid:     http.StatusBadRequest,
	engine.CodeNotFound:    http.StatusNotFound,
	engine.CodeConflict:    http.StatusConflict,
	engine.CodeMeta:        http.StatusBadGateway,
	engine.CodeUnavailable: http.StatusServiceUnavailable,
}

// apiError is an error of the HTTP layer itself.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// describe turns any error into its status and message.
func describe(err error) (int, string) {
	var (
		ae *apiError
		ee *engine.Error
		he *echo.HTTPError
	)
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.msg
	case errors.As(err, &ee):
		status, ok := statusOf[ee.Code]
		if !ok {
			status = http.StatusInternalServerError
		}
		msg := ee.Message
		var me *messenger.Error
		if errors.As(err, &me) {
			msg += fmt.Sprintf(". Meta answered HTTP %d, code %d", me.HTTPStatus, me.Code)
			if me.Subcode != 0 {
				msg += fmt.Sprintf(", subcode %d", me.Subcode)
			}
			msg += ": " + me.Message
			if me.FBTraceID != "" {
				msg += " (fbtrace_id " + me.FBTraceID + ")"
			}
		} else if ee.Code == engine.CodeMeta && ee.Err != nil {
			msg += ": " + ee.Err.Error()
		}
		return status, msg
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, "no such endpoint; see the README for the API"
		case http.StatusMethodNotAllowed:
			return he.Code, "method not allowed on this endpoint"
		case http.StatusRequestEntityTooLarge:
			return he.Code, "request body too large"
		}
		return he.Code, fmt.Sprint(he.Message)
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)
	}
	return http.StatusInternalServerError, "internal error; see threadctl's log for the request id"
}

func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, msg := describe(err)
	if status >= 500 {
		s.log.Error("request failed", "request_id", requestID(c), "status", status, "err", err)
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(status)
		return
	}
	c.JSON(status, Envelope{Status: status, Message: msg})
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
