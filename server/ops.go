package server

import (
	"net/http"
	"net/http/pprof"

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
