package server

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// MaxHeaderBytes is the most a request's header may take: the sum, over its
// lines (Host included), of name, ": ", value and CRLF. A request with more
// is answered 431.
const MaxHeaderBytes = 16 << 10

// headerReadLimit is the http.Server's MaxHeaderBytes: net/http reads that
// much of a request line and header (plus 4 KB of slack) and cuts off a
// larger one with its own 431; below it, headerLimit applies the exact
// limit. The margin leaves room for a long request line, which
// MaxHeaderBytes does not count.
const headerReadLimit = MaxHeaderBytes + 16<<10

// headerSize is what a request's header takes, by MaxHeaderBytes' rule.
func headerSize(r *http.Request) int {
	n := 0
	if r.Host != "" {
		n += len("Host: ") + len(r.Host) + len("\r\n")
	}
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// headerLimit answers 431 to a request whose header is over MaxHeaderBytes.
func (s *Server) headerLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if n := headerSize(c.Request()); n > MaxHeaderBytes {
			return &apiError{status: http.StatusRequestHeaderFieldsTooLarge,
				msg: fmt.Sprintf("the request headers take %d bytes, over the limit of %d bytes: send fewer or shorter headers", n, MaxHeaderBytes)}
		}
		return next(c)
	}
}

// unambiguous refuses, on the /1.0/ API, a request that could mean two
// things: a query parameter given twice, a form field given twice, or one
// given in the query and in the form body with different values. It runs
// before the token check and the handlers, so nothing is applied. Messages
// name the parameter, never its values (one may be a token).
func (s *Server) unambiguous(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !strings.HasPrefix(c.Path(), "/1.0/") {
			return next(c)
		}
		r := c.Request()
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return ambiguous("the query string is malformed (%v): separate parameters with & and escape them", err)
		}
		for _, name := range sortedKeys(query) {
			if n := len(query[name]); n > 1 {
				return ambiguous("query parameter %q is given %d times", name, n)
			}
		}
		form, err := formBody(r)
		if err != nil {
			return err
		}
		for _, name := range sortedKeys(form) {
			if n := len(form[name]); n > 1 {
				return ambiguous("form field %q is given %d times", name, n)
			}
			if q, ok := query[name]; ok && q[0] != form[name][0] {
				return ambiguous("%q is given in the query and in the form body, with different values", name)
			}
		}
		return next(c)
	}
}

func ambiguous(format string, args ...any) error {
	return badRequest("%s: the request could mean two things, so nothing was applied; give each parameter once", fmt.Sprintf(format, args...))
}

// formBody parses a form body, if the request has one.
func formBody(r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return nil, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	var err error
	switch ct {
	case echo.MIMEApplicationForm:
		err = r.ParseForm()
	case echo.MIMEMultipartForm:
		err = r.ParseMultipartForm(32 << 10)
	default:
		return nil, nil
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, err
	case err != nil:
		return nil, badRequest("the form body is malformed: %v", err)
	}
	return r.PostForm, nil
}

func sortedKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
