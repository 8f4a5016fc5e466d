package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// routes builds the simulator's handler: the control API under /_sim/, Graph everywhere else.
func (s *Sim) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_sim/pages", s.handleListPages)
	mux.HandleFunc("PUT /_sim/pages/{page_id}", s.handlePutPage)
	mux.HandleFunc("GET /_sim/pages/{page_id}", s.handleGetPage)
	mux.HandleFunc("POST /_sim/pages/{page_id}/customers/{psid}/messages", s.handleCustomerMessage)
	mux.HandleFunc("GET /_sim/pages/{page_id}/threads/{psid}", s.handleThread)
	mux.HandleFunc("POST /_sim/pages/{page_id}/apps/{app_id}/verify", s.handleVerify)
	mux.HandleFunc("GET /_sim/log", s.handleLog)
	mux.HandleFunc("GET /_sim/faults", s.handleListFaults)
	mux.HandleFunc("PUT /_sim/faults", s.handlePutFault)
	mux.HandleFunc("DELETE /_sim/faults", s.handleClearFaults)
	mux.HandleFunc("POST /_sim/settle", s.handleSettle)
	mux.HandleFunc("/_sim/", func(w http.ResponseWriter, r *http.Request) {
		writeControlError(w, http.StatusNotFound, fmt.Errorf("no control endpoint %s %s", r.Method, r.URL.Path))
	})
	mux.HandleFunc("/", s.serveGraph)
	return mux
}

type controlError struct {
	Error string `json:"error"`
}

func writeControl(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeControlError(w http.ResponseWriter, status int, err error) {
	writeControl(w, status, controlError{Error: err.Error()})
}

// readControlBody decodes a JSON request body, refusing unknown fields.
func readControlBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if err := strictUnmarshal(body, v); err != nil {
		return fmt.Errorf("body is not the expected JSON: %w", err)
	}
	return nil
}

// strictUnmarshal is json.Unmarshal that refuses unknown fields, so that a misspelt setting
// is an error rather than silently ignored.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func (s *Sim) handleListPages(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	pages := make([]PageConfig, 0, len(s.pages))
	for _, pg := range s.pages {
		pages = append(pages, pg.cfg)
	}
	s.mu.Unlock()
	writeControl(w, http.StatusOK, map[string]any{"pages": pages})
}

func (s *Sim) handlePutPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("page_id")
	var cfg PageConfig
	if err := readControlBody(r, &cfg); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	if cfg.PageID != "" && cfg.PageID != id {
		writeControlError(w, http.StatusBadRequest, fmt.Errorf("page_id %s in the body differs from %s in the path", cfg.PageID, id))
		return
	}
	cfg.PageID = id
	if err := s.PutPage(cfg); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	stored, _ := s.pageConfig(id)
	writeControl(w, http.StatusOK, stored)
}

func (s *Sim) handleGetPage(w http.ResponseWriter, r *http.Request) {
	cfg, ok := s.pageConfig(r.PathValue("page_id"))
	if !ok {
		writeControlError(w, http.StatusNotFound, fmt.Errorf("page %s: %w", r.PathValue("page_id"), ErrUnknownPage))
		return
	}
	writeControl(w, http.StatusOK, cfg)
}

func (s *Sim) handleCustomerMessage(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text string `json:"text"`
	}
	if err := readControlBody(r, &body); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	mid, err := s.CustomerMessage(r.PathValue("page_id"), r.PathValue("psid"), body.Text)
	switch {
	case errors.Is(err, ErrUnknownPage):
		writeControlError(w, http.StatusNotFound, err)
	case err != nil:
		writeControlError(w, http.StatusBadRequest, err)
	default:
		writeControl(w, http.StatusOK, map[string]string{"mid": mid})
	}
}

func (s *Sim) handleThread(w http.ResponseWriter, r *http.Request) {
	pageID := r.PathValue("page_id")
	if _, ok := s.pageConfig(pageID); !ok {
		writeControlError(w, http.StatusNotFound, fmt.Errorf("page %s: %w", pageID, ErrUnknownPage))
		return
	}
	writeControl(w, http.StatusOK, s.Thread(pageID, r.PathValue("psid")))
}

func (s *Sim) handleVerify(w http.ResponseWriter, r *http.Request) {
	err := s.VerifyWebhook(r.Context(), r.PathValue("page_id"), r.PathValue("app_id"))
	switch {
	case errors.Is(err, ErrUnknownPage):
		writeControlError(w, http.StatusNotFound, err)
	case err != nil:
		writeControlError(w, http.StatusBadRequest, err)
	default:
		writeControl(w, http.StatusOK, map[string]bool{"verified": true})
	}
}

func (s *Sim) handleLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	writeControl(w, http.StatusOK, map[string]any{"entries": s.Log(q.Get("page_id"), q.Get("psid"))})
}

func (s *Sim) handleListFaults(w http.ResponseWriter, r *http.Request) {
	writeControl(w, http.StatusOK, map[string]any{"faults": s.faultList()})
}

// handlePutFault adds a fault (PUT /_sim/faults, the JSON form of Fault: call, status, count,
// delay_ms, reset, for_ms, apply_late, code, subcode, message, app_id) and answers the
// active faults. An inconsistent fault (reset with status, no effect at all, ...) is a 400
// naming every problem.
func (s *Sim) handlePutFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if err := readControlBody(r, &f); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	if err := f.validate(); err != nil {
		writeControlError(w, http.StatusBadRequest, err)
		return
	}
	s.SetFault(f)
	writeControl(w, http.StatusOK, map[string]any{"faults": s.faultList()})
}

func (s *Sim) handleClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearFaults()
	writeControl(w, http.StatusOK, map[string]any{"faults": []Fault{}})
}

// handleSettle waits like Settle, up to ?timeout= (a Go duration or seconds; default 10s).
func (s *Sim) handleSettle(w http.ResponseWriter, r *http.Request) {
	timeout := 10 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			n, nerr := strconv.ParseFloat(v, 64)
			if nerr != nil || n < 0 {
				writeControlError(w, http.StatusBadRequest, fmt.Errorf("timeout %q: want a duration such as 5s", v))
				return
			}
			d = time.Duration(n * float64(time.Second))
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if err := s.Settle(ctx); err != nil {
		writeControlError(w, http.StatusGatewayTimeout, err)
		return
	}
	writeControl(w, http.StatusOK, map[string]bool{"settled": true})
}

// MarshalJSON writes the view as GET /_sim/pages/{page_id}/threads/{psid} answers it, with
// null for no owner and no expiry.
func (v ThreadView) MarshalJSON() ([]byte, error) {
	w := struct {
		OwnerAppID *string         `json:"owner_app_id"`
		ExpiresAt  *time.Time      `json:"expires_at"`
		Messages   []ThreadMessage `json:"messages"`
	}{Messages: v.Messages}
	if v.OwnerAppID != "" {
		w.OwnerAppID = &v.OwnerAppID
	}
	if !v.ExpiresAt.IsZero() {
		t := v.ExpiresAt.UTC()
		w.ExpiresAt = &t
	}
	if w.Messages == nil {
		w.Messages = []ThreadMessage{}
	}
	return json.Marshal(w)
}
