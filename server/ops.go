package server

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/labstack/echo/v4"
)

// registerPprof serves Go's profiles under /debug/pprof/ (SPEC.md §3.4),
// behind a global API token: operators profile a running service with
//
//	go tool pprof -http=: 'http://host:8080/debug/pprof/profile?seconds=20&access_token=…'
func (s *Server) registerPprof(r authRouter) {
	r.GET("/debug/pprof/", echo.WrapHandler(http.HandlerFunc(pprof.Index)))
	r.GET("/debug/pprof/cmdline", echo.WrapHandler(http.HandlerFunc(pprof.Cmdline)))
	r.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	r.GET("/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol)))
	r.GET("/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace)))
	r.GET("/debug/pprof/:name", func(c echo.Context) error {
		pprof.Handler(c.Param("name")).ServeHTTP(c.Response(), c.Request())
		return nil
	})
}

// backup is GET /ops/backup: a consistent snapshot of the store, streamed
// (threadctl backup --out FILE is its client). Once the first byte is sent
// an error can only cut the stream short: the client checks the file.
func (s *Server) backup(c echo.Context) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="threadctl-%s.db"`, time.Now().UTC().Format("20060102T150405Z")))
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(http.StatusOK)
	n, err := s.cfg.Backup(c.Request().Context(), c.Response())
	if err != nil {
		s.log.Error("backup failed", "request_id", requestID(c), "bytes", n, "err", err)
		return nil
	}
	s.log.Info("backup streamed", "request_id", requestID(c), "bytes", n)
	return nil
}
