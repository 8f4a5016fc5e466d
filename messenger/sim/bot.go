package sim

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// viaBot marks log entries of the reference bot.
const viaBot = "bot"

// runBot hands one event to a page's reference bot and lets it act, through the same Graph
// logic as any app (its calls are logged as calls by its app). It runs on the bot's outbox
// goroutine, never on the request that caused the event.
//
// On a request_thread_control it passes control to the requester (HonorRequests). On a
// customer message in messaging it first claims an idle thread (ClaimIdle), then, if it owns
// the thread, hands it over when the text contains HandoverText, else replies (Reply).
func (s *Sim) runBot(pageID string, q queued) {
	s.mu.Lock()
	s.appendLog(LogEntry{
		Kind:           KindWebhook,
		PageID:         q.ev.pageID,
		PSID:           q.ev.psid,
		RecipientAppID: q.appID,
		Field:          q.channel,
		Event:          q.ev.kind,
		MID:            q.ev.mid,
		Attempt:        1,
		Outcome:        OutcomeDelivered,
		Via:            viaBot,
	})
	var app AppConfig
	var mode string
	if pg := s.pages[pageID]; pg != nil && pg.apps[q.appID] != nil {
		app, mode = *pg.apps[q.appID], pg.mode()
	}
	s.mu.Unlock()
	bot := app.Bot
	if bot == nil {
		return // the page was reconfigured: the app is no longer a reference bot
	}
	psid := q.ev.psid
	switch {
	case q.ev.kind == evRequest && bot.HonorRequests:
		if s.sleep(s.ctx, time.Duration(bot.PassDelayMS)*time.Millisecond) != nil {
			return
		}
		if s.ownerOf(pageID, psid) != app.AppID {
			return
		}
		s.botCall(app, "pass_thread_control", params{
			"recipient":     map[string]any{"id": psid},
			"target_app_id": json.Number(q.ev.requested),
		})
	case q.ev.kind == evMessage && q.channel == chanMessaging:
		owner := s.ownerOf(pageID, psid)
		if owner == "" && bot.claimsIdle() {
			s.botCall(app, "request_thread_control", params{"recipient": map[string]any{"id": psid}})
			owner = s.ownerOf(pageID, psid)
		}
		switch {
		case owner != app.AppID:
		case bot.HandoverText != "" && strings.Contains(q.ev.text, bot.HandoverText):
			s.botHandOver(app, mode, psid)
		case bot.Reply == "echo":
			s.botCall(app, "messages", params{
				"recipient":      map[string]any{"id": psid},
				"messaging_type": "RESPONSE",
				"message":        map[string]any{"text": "echo: " + q.ev.text},
			})
		}
	}
}

// botHandOver passes a thread the bot owns to its handover app: with the Send API's
// thread_control under Conversation Routing when asked to, else with pass_thread_control.
func (s *Sim) botHandOver(app AppConfig, mode, psid string) {
	bot := app.Bot
	rcpt := map[string]any{"id": psid}
	if bot.HandoverVia == HandoverViaSendAPI && (mode == ModeCR || mode == ModeCRZero) {
		s.botCall(app, "messages", params{
			"recipient":      rcpt,
			"messaging_type": "RESPONSE",
			"message":        map[string]any{"text": handoverMessage},
			"thread_control": map[string]any{"control_type": "pass", "app_id": json.Number(bot.HandoverAppID)},
		})
		return
	}
	s.botCall(app, "pass_thread_control", params{
		"recipient":     rcpt,
		"target_app_id": json.Number(bot.HandoverAppID),
	})
}

// botCall makes a Graph call as the bot's app.
func (s *Sim) botCall(app AppConfig, edge string, p params) {
	res := s.graph(s.ctx, graphRequest{
		method: http.MethodPost, node: "me", edge: edge, p: p, token: app.AccessToken, via: viaBot,
	})
	switch {
	case res.reset:
		s.logger.Info("reference bot call failed: network error (connection reset by a fault)", "app_id", app.AppID, "call", edge)
	case res.status != http.StatusOK:
		s.logger.Info("reference bot call failed", "app_id", app.AppID, "call", edge, "status", res.status)
	}
}

// ownerOf returns a thread's current owner ("" when idle or the page is gone).
func (s *Sim) ownerOf(pageID, psid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg := s.pages[pageID]
	if pg == nil {
		return ""
	}
	return s.thread(pg, psid, s.now()).owner
}
