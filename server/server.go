// Package server is threadctl's HTTP front end (Echo): the RingCX Bots API,
// the agent-side API, Meta's webhooks, inspection and operations endpoints.
// Nothing else in threadctl imports Echo.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/threadctl/threadctl/engine"
)

// Config wires a server.
type Config struct {
	Engine *engine.Engine
	// APITokens are global API tokens (each the token or "sha256:<hex>"),
	// accepted by the Bots API, the agent API, /debug and /diagrams, as
	// ?access_token= or Authorization: Bearer.
	APITokens []string
	// Tokens are more API tokens, each global or acting only on some pages'
	// threads.
	Tokens []Token
	// VerifyToken answers Meta's webhook verification handshake.
	VerifyToken string
	// WebhookSecrets are the app secrets a webhook signature may be made with
	// (the RingCX app of each page).
	WebhookSecrets []string
	// Ready reports whether the service can serve (store reachable); nil is
	// always ready.
	Ready func(ctx context.Context) error
	// Metrics serves /metrics and receives the server's observations; nil
	// disables both.
	Metrics *Metrics
	// Docs holds the recorded workflow diagrams (workflows/<name>.<format>),
	// served under /diagrams/workflows/; nil serves none.
	Docs fs.FS
	// Backup, if set, streams a consistent snapshot of the store (GET
	// /ops/backup, global token).
	Backup func(ctx context.Context, w io.Writer) (int64, error)
	// Extra registers more routes behind a global API token (operations:
	// not about one page's threads).
	Extra  func(g Router)
	Logger *slog.Logger
	// BodyLimit caps request bodies (default 1 MiB).
	BodyLimit int64
}

// Router is where extra routes are registered; they need a global API token.
type Router interface {
	GET(path string, h echo.HandlerFunc)
}

// authRouter registers routes behind the API token.
type authRouter struct {
	e    *echo.Echo
	auth echo.MiddlewareFunc
}

func (r authRouter) GET(path string, h echo.HandlerFunc)  { r.e.GET(path, h, r.auth) }
func (r authRouter) POST(path string, h echo.HandlerFunc) { r.e.POST(path, h, r.auth) }
func (r authRouter) PUT(path string, h echo.HandlerFunc)  { r.e.PUT(path, h, r.auth) }

// Server is the HTTP front end.
type Server struct {
	cfg     Config
	tokens  tokenSet
	metrics *Metrics
	svgs    svgCache
	echo    *echo.Echo
	log     *slog.Logger
	http    *http.Server
}

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("server: Engine is required")
	}
	if len(cfg.APITokens) == 0 && len(cfg.Tokens) == 0 {
		return nil, errors.New("server: at least one API token is required")
	}
	tokens, err := newTokenSet(cfg.APITokens, cfg.Tokens)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = 1 << 20
	}
	s := &Server{cfg: cfg, tokens: tokens, log: cfg.Logger, metrics: cfg.Metrics}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		Generator: func() string { return newRequestID() },
	}))
	e.Use(s.accessLog)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.log.Error("panic", "err", err, "request_id", requestID(c), "stack", string(stack))
		return err
	}}))
	e.Use(s.headerLimit)
	e.Use(s.bodyLimit)
	e.Use(s.unambiguous)

	e.GET("/healthz", func(c echo.Context) error { return success(c) })
	e.GET("/readyz", s.readyz)
	if cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(cfg.Metrics.Handler()))
	}
	e.GET("/webhooks/messenger", s.webhookVerify)
	e.POST("/webhooks/messenger", s.webhookReceive)

	// Authenticated routes carry the middleware themselves (not an Echo
	// group, whose catch-all would answer 401 for unknown paths).
	api := authRouter{e: e, auth: s.auth}
	api.POST("/1.0/bots/handover", s.handover)
	api.POST("/1.0/interventions", s.openIntervention)
	api.PUT("/1.0/interventions/:id/close", s.closeIntervention)
	api.GET("/1.0/interventions/:id", s.getIntervention)
	api.POST("/1.0/contents", s.createContent)
	api.GET("/1.0/contents/:id", s.getContent)
	api.GET("/debug/threads", s.listThreads)
	api.GET("/debug/threads/:identity_foreign_id", s.getThread)
	api.GET("/debug", s.debugRedirect)
	api.GET("/debug/", s.debugList)
	api.GET("/debug/threads/:identity_foreign_id/view", s.debugThread)
	api.GET("/diagrams/:file", s.stateDiagram)
	api.GET("/diagrams/threads/:file", s.threadDiagram)
	api.GET("/diagrams/workflows/:file", s.workflowDiagram)
	ops := authRouter{e: e, auth: s.authGlobal}
	s.registerPprof(ops)
	if cfg.Backup != nil {
		ops.GET("/ops/backup", s.backup)
	}
	if cfg.Extra != nil {
		cfg.Extra(ops)
	}
	s.echo = e
	return s, nil
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve serves HTTP on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.http = &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 5 * time.Second,
		MaxHeaderBytes:    headerReadLimit,
		ReadTimeout:       30 * time.Second,
		// Graph calls (with retries) are made while a request waits.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests and waits for those in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.http == nil {
		return nil
	}
	return s.http.Shutdown(ctx)
}

// okJSON is the success envelope, encoded once.
var okJSON = []byte(`{"status":200,"message":"Success"}` + "\n")

// success answers the Bots API's success envelope.
func success(c echo.Context) error { return c.JSONBlob(http.StatusOK, okJSON) }

func (s *Server) readyz(c echo.Context) error {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(c.Request().Context()); err != nil {
			return &apiError{status: http.StatusServiceUnavailable, msg: "not ready: " + err.Error()}
		}
	}
	return success(c)
}

func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.cfg.BodyLimit {
			return &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body of %d bytes is over the limit of %d bytes", r.ContentLength, s.cfg.BodyLimit)}
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.cfg.BodyLimit)
		return next(c)
	}
}

func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Let the error handler write the response, so the status is known.
			c.Error(err)
		}
		status := c.Response().Status
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		d := time.Since(start)
		s.metrics.HTTPRequest(route, c.Request().Method, status, d)
		// Webhooks and probes are the bulk of the traffic: logged at debug
		// level unless they fail.
		level := slog.LevelInfo
		switch {
		case status >= 500:
			level = slog.LevelError
		case status >= 400:
		case route == "/webhooks/messenger", route == "/healthz", route == "/readyz", route == "/metrics":
			level = slog.LevelDebug
		}
		if !s.log.Enabled(c.Request().Context(), level) {
			return nil
		}
		s.log.Log(c.Request().Context(), level, "http request",
			"request_id", requestID(c), "method", c.Request().Method, "route", route,
			"status", status, "duration_ms", float64(d.Microseconds())/1000, "remote", c.RealIP())
		return nil
	}
}

func requestID(c echo.Context) string { return c.Response().Header().Get(echo.HeaderXRequestID) }
