package sim

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Rules of the thread-control and Send APIs per page mode (reference §4, §7, §12). Each handler
// runs with s.mu held and answers a success body or Meta's error.

type wireSuccess struct {
	Success bool `json:"success"`
}

var success = wireSuccess{Success: true}

// callThread parses the call's recipient and returns its thread (expiry applied).
func (s *Sim) callThread(c *callCtx) (*thread, *graphError) {
	psid, gerr := c.p.recipient()
	if gerr != nil {
		return nil, gerr
	}
	c.entry.PSID = psid
	return s.thread(c.pg, psid, c.now), nil
}

// wirePageNode is the page node as GET /me (or /{page_id}) answers it. Field order follows
// Meta's sample: messaging_feature_status, then id.
type wirePageNode struct {
	MessagingFeatureStatus *wireFeatureStatus `json:"messaging_feature_status,omitempty"`
	ID                     string             `json:"id"`
}

// wireFeatureStatus is the page's messaging_feature_status (reference §2.3).
type wireFeatureStatus struct {
	HopV2        bool `json:"hop_v2"`
	MsgrMultiApp bool `json:"msgr_multi_app"`
	IGMultiApp   bool `json:"ig_multi_app"`
}

// pageNode answers GET /me and GET /{page_id}: the page the token belongs to. The fields id
// and messaging_feature_status are known; id is always answered, as Graph does; any other
// field is Graph's code 100 error.
//
// Meta documents messaging_feature_status only as the way to check "the Conversation Routing
// status" and does not define its flags. The simulator's choice: hop_v2 is true when the page
// is in mode hop_v2, msgr_multi_app when it is in cr or cr_zero (Conversation Routing for
// Messenger, with or without a default app), and ig_multi_app is always false (the simulator
// has no Instagram account). A hop_v1 page answers all three false.
func (s *Sim) pageNode(c *callCtx) (any, *graphError) {
	node := wirePageNode{ID: c.pg.id()}
	fields, _ := c.p.str("fields")
	for _, f := range strings.Split(fields, ",") {
		switch f = strings.TrimSpace(f); f {
		case "", "id":
		case "messaging_feature_status":
			mode := c.pg.mode()
			node.MessagingFeatureStatus = &wireFeatureStatus{
				HopV2:        mode == ModeHOPv2,
				MsgrMultiApp: mode == ModeCR || mode == ModeCRZero,
			}
		default:
			return nil, errParam("Tried accessing nonexisting field (%s) on node type (Page)", f)
		}
	}
	return node, nil
}

// passThreadControl: hop_v1 lets only the owner pass; the other modes let the owner pass, and
// any app when the thread is idle (itself included). The owner may not pass to itself. Without
// target_app_id, control goes to the Primary Receiver (hop_v1, hop_v2, when the caller is not
// it) or the default app (cr). The new owner receives pass_thread_control.
func (s *Sim) passThreadControl(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	target, given, gerr := c.p.appID("target_app_id")
	if gerr != nil {
		return nil, gerr
	}
	c.entry.TargetAppID = target
	owner, isOwner := t.owner, t.owner == c.app
	if !isOwner && (owner != "" || c.pg.mode() == ModeHOPv1) {
		return nil, errNotOwner()
	}
	if !given {
		target = s.defaultPassTarget(c)
		if target == "" {
			return nil, errParam("The parameter target_app_id is required")
		}
		c.entry.TargetAppID = target
	}
	if gerr := s.checkPassTarget(c, target, isOwner); gerr != nil {
		return nil, gerr
	}
	metadata, _ := c.p.str("metadata")
	setOwner(c.pg, t, target, c.now)
	s.deliverTo(c.pg, target, FieldHandovers, event{
		kind: evPass, pageID: c.pg.id(), psid: c.entry.PSID, ts: s.stamp(c.now),
		prevOwner: owner, newOwner: target, metadata: metadata,
	})
	return success, nil
}

// defaultPassTarget is where pass_thread_control sends control without target_app_id: the
// default app in cr, the Primary Receiver for a secondary in hop_v1 and hop_v2; "" when
// target_app_id is required.
func (s *Sim) defaultPassTarget(c *callCtx) string {
	primary := c.pg.primary()
	switch c.pg.mode() {
	case ModeCR:
		return primary
	case ModeHOPv1, ModeHOPv2:
		if c.app != primary {
			return primary
		}
	}
	return ""
}

// checkPassTarget checks that control may go to target. Meta's exact errors are undocumented:
// the simulator answers code 100 with the reason.
func (s *Sim) checkPassTarget(c *callCtx, target string, callerIsOwner bool) *graphError {
	if !c.pg.connected(target) {
		return errParam("Param target_app_id %s is not an app connected to this page", target)
	}
	if callerIsOwner && target == c.app {
		return errParam("The target app cannot be itself: your app is already the thread owner")
	}
	return nil
}

// takeThreadControl: hop_v1 lets only the Primary Receiver take; hop_v2 any app on an idle
// thread and the Primary Receiver always; cr the apps whose takeover setting is on (not the
// owner); cr_zero nobody. The previous owner, if any, receives take_thread_control.
func (s *Sim) takeThreadControl(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	owner, primary := t.owner, c.pg.primary()
	switch c.pg.mode() {
	case ModeHOPv1:
		if c.app != primary {
			return nil, errPermission("only the Primary Receiver app can take thread control")
		}
	case ModeHOPv2:
		if owner != "" && owner != c.app && c.app != primary {
			return nil, errNotOwner()
		}
	case ModeCR:
		if !c.pg.takeoverAllowed(c.app) {
			return nil, errPermission("the takeover setting is off for this app (Page Settings, Advanced Messaging)")
		}
		if owner == c.app {
			return nil, errParam("You cannot take thread control: your app is already the thread owner")
		}
	case ModeCRZero:
		return nil, errPermission("take_thread_control is blocked on this page until a default app is set (Conversation Routing zero-config)")
	}
	metadata, _ := c.p.str("metadata")
	if owner == c.app {
		// hop_v1/hop_v2 owner taking again: Meta is silent; the simulator answers success and
		// restarts the control window, with no webhook.
		setOwner(c.pg, t, c.app, c.now)
		return success, nil
	}
	setOwner(c.pg, t, c.app, c.now)
	if owner != "" {
		s.deliverTo(c.pg, owner, FieldHandovers, event{
			kind: evTake, pageID: c.pg.id(), psid: c.entry.PSID, ts: s.stamp(c.now),
			prevOwner: owner, newOwner: c.app, metadata: metadata,
		})
	}
	return success, nil
}

// requestThreadControl: blocked in cr; an error for the owner. On an idle thread (hop_v2,
// cr_zero) it grants control and sends the caller pass_thread_control; otherwise the owner
// (hop_v1: the Primary Receiver) receives request_thread_control.
func (s *Sim) requestThreadControl(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	if c.pg.mode() == ModeCR {
		return nil, errPermission("request_thread_control is not available on a page with a default app (Conversation Routing)")
	}
	owner := t.owner
	if owner == c.app {
		return nil, errParam("You cannot request thread control: your app is already the thread owner")
	}
	metadata, _ := c.p.str("metadata")
	ev := event{pageID: c.pg.id(), psid: c.entry.PSID, ts: s.stamp(c.now), metadata: metadata}
	if owner == "" {
		setOwner(c.pg, t, c.app, c.now)
		ev.kind, ev.newOwner = evPass, c.app
		s.deliverTo(c.pg, c.app, FieldHandovers, ev)
		return success, nil
	}
	to := owner
	if c.pg.mode() == ModeHOPv1 && c.app != c.pg.primary() {
		// hop_v1 requests go to the Primary Receiver; the Primary's own request (Meta is
		// silent on it) goes to the owner.
		to = c.pg.primary()
	}
	ev.kind, ev.requested = evRequest, c.app
	c.entry.TargetAppID = to
	s.deliverTo(c.pg, to, FieldHandovers, ev)
	return success, nil
}

// releaseThreadControl: the owner makes the thread idle; no webhook.
func (s *Sim) releaseThreadControl(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	if t.owner != c.app {
		return nil, errNotOwner()
	}
	setOwner(c.pg, t, "", c.now)
	return success, nil
}

// extendThreadControl: the owner sets the expiry to now + duration (seconds, at most 7 days;
// Meta is silent on whether it adds to the remaining time).
func (s *Sim) extendThreadControl(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	raw, _ := c.p.str("duration")
	d, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || d < 1 || d > maxExtendS {
		return nil, errParam("Param duration must be an integer number of seconds between 1 and %d (7 days)", maxExtendS)
	}
	if t.owner != c.app {
		return nil, errNotOwner()
	}
	t.expiresAt = c.now.Add(time.Duration(d) * time.Second)
	return success, nil
}

// passThreadMetadata: any connected app sends metadata to another app; ownership does not
// change. Meta documents no webhook shape; the simulator sends the target
// pass_thread_metadata{previous_owner_app_id: caller, new_owner_app_id: target, metadata}.
func (s *Sim) passThreadMetadata(c *callCtx) (any, *graphError) {
	_, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	target, given, gerr := c.p.appID("target_app_id")
	if gerr != nil {
		return nil, gerr
	}
	if !given {
		return nil, errParam("The parameter target_app_id is required")
	}
	c.entry.TargetAppID = target
	if !c.pg.connected(target) {
		return nil, errParam("Param target_app_id %s is not an app connected to this page", target)
	}
	metadata, _ := c.p.str("metadata")
	s.deliverTo(c.pg, target, FieldHandovers, event{
		kind: evMetadata, pageID: c.pg.id(), psid: c.entry.PSID, ts: s.stamp(c.now),
		prevOwner: c.app, newOwner: target, metadata: metadata,
	})
	return success, nil
}

type wireThreadOwnerList struct {
	Data []wireThreadOwnerItem `json:"data"`
}

type wireThreadOwnerItem struct {
	ThreadOwner wireThreadOwner `json:"thread_owner"`
}

type wireThreadOwner struct {
	AppID      string `json:"app_id,omitempty"`
	Expiration int64  `json:"expiration,omitempty"`
}

// threadOwner: an idle thread answers {"data":[]}. hop_v1 (no expiration): the Primary sees
// the owner, a secondary only when it or the Primary owns the thread, else 100/2018234.
// hop_v2: every connected app sees owner and expiration (Meta is silent). cr/cr_zero: the
// owner and the default app see both, other apps the expiration only.
func (s *Sim) threadOwner(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	if t.owner == "" {
		return wireThreadOwnerList{Data: []wireThreadOwnerItem{}}, nil
	}
	primary := c.pg.primary()
	o := wireThreadOwner{AppID: t.owner}
	switch c.pg.mode() {
	case ModeHOPv1:
		if c.app != primary && c.app != t.owner && t.owner != primary {
			return nil, errVisibility()
		}
	case ModeCR, ModeCRZero:
		if c.app != t.owner && c.app != primary {
			o.AppID = ""
		}
	}
	if !t.expiresAt.IsZero() {
		o.Expiration = t.expiresAt.Unix()
	}
	return wireThreadOwnerList{Data: []wireThreadOwnerItem{{ThreadOwner: o}}}, nil
}

type wireAppList struct {
	Data []wireApp `json:"data"`
}

type wireApp struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// secondaryReceivers lists the page's apps other than the Primary Receiver (default app).
// Only it may call when there is one; without one (hop_v2 without primary, cr_zero) any app
// may, and every app is listed (Meta is silent on both).
func (s *Sim) secondaryReceivers(c *callCtx) (any, *graphError) {
	primary := c.pg.primary()
	if primary != "" && c.app != primary {
		return nil, errPermission("only the Primary Receiver app can list the secondary receivers")
	}
	platform, _ := c.p.str("platform")
	switch strings.ToUpper(platform) {
	case "", "MESSENGER":
	case "INSTAGRAM":
		return wireAppList{Data: []wireApp{}}, nil
	default:
		return nil, errParam("Param platform must be one of {INSTAGRAM, MESSENGER}")
	}
	withID, withName := true, true
	if fields, ok := c.p.str("fields"); ok && strings.TrimSpace(fields) != "" {
		withID, withName = false, false
		for _, f := range strings.Split(fields, ",") {
			switch strings.TrimSpace(f) {
			case "id":
				withID = true
			case "name":
				withName = true
			default:
				return nil, errParam("Tried accessing nonexisting field (%s) on node type (Application)", strings.TrimSpace(f))
			}
		}
	}
	list := wireAppList{Data: []wireApp{}}
	for _, a := range c.pg.cfg.Apps {
		if a.AppID == primary {
			continue
		}
		var w wireApp
		if withID {
			w.ID = a.AppID
		}
		if withName {
			w.Name = a.Name
		}
		list.Data = append(list.Data, w)
	}
	return list, nil
}

type wireSendResult struct {
	RecipientID string `json:"recipient_id"`
	MessageID   string `json:"message_id,omitempty"`
}

// sendMessage is the Send API for text messages and sender actions. Only the owner may send;
// on an idle thread any app may (cr: only the default app). Sending does not claim an idle
// thread (Meta is silent; the reference's suggested default). Apps subscribed to
// message_echoes receive the echo.
//
// With Conversation Routing (cr and cr_zero) a thread_control field passes control (to
// app_id, or to the default app when app_id is absent: cr_zero, which has none, needs app_id)
// or releases it (control_type "release" or absent; no webhook) after the message is sent.
// Meta says thread control in the Send API is only available with Conversation Routing: in
// hop_v1 and hop_v2 the field is ignored (Meta is silent on whether it is an error). A
// thread_control that cannot be applied refuses the whole call, before anything is sent; with
// a sender_action instead of a message it is checked but not applied (only a sent message
// carries it; Meta is silent).
func (s *Sim) sendMessage(c *callCtx) (any, *graphError) {
	t, gerr := s.callThread(c)
	if gerr != nil {
		return nil, gerr
	}
	psid := c.entry.PSID
	msg, hasMessage, err := c.p.object("message")
	if err != nil {
		return nil, errParam("Param message must be an object like {\"text\":\"...\"}: %v", err)
	}
	action, hasAction := c.p.str("sender_action")
	if !hasMessage && !hasAction {
		return nil, errParam("The parameter message or sender_action is required")
	}
	var text, metadata string
	if hasMessage {
		text, _ = msg["text"].(string)
		metadata, _ = msg["metadata"].(string)
		if text == "" {
			return nil, errParam("The simulator supports text messages only: param message[text] must be a non-empty string")
		}
		if utf8.RuneCountInString(text) > maxTextRunes {
			return nil, errParam("Length of param message[text] must be less than or equal to %d", maxTextRunes)
		}
		c.entry.Text = text
	}
	control, hasControl, err := c.p.object("thread_control")
	if err != nil {
		return nil, errParam("Param thread_control must be an object: %v", err)
	}
	hasControl = hasControl && (c.pg.mode() == ModeCR || c.pg.mode() == ModeCRZero)

	owner := t.owner
	mayIdle := c.pg.mode() != ModeCR || c.app == c.pg.primary()
	if owner != c.app && (owner != "" || !mayIdle) {
		return nil, errSendBlocked()
	}
	var pass bool
	var target string
	if hasControl {
		kind, _ := control["control_type"].(string)
		switch kind {
		case "pass":
			pass = true
			target, _ = idValue(control["app_id"])
			if target == "" {
				target = c.pg.primary()
			}
			if target == "" {
				return nil, errParam("Param thread_control[app_id] is required: the page has no default app (Conversation Routing zero-config)")
			}
			if gerr := s.checkPassTarget(c, target, owner == c.app); gerr != nil {
				return nil, gerr
			}
		case "", "release":
		default:
			return nil, errParam("Param thread_control[control_type] must be pass or release")
		}
	}
	if !hasMessage {
		c.entry.Detail = "sender_action " + action
		return wireSendResult{RecipientID: psid}, nil
	}

	ts := s.stamp(c.now)
	mid := newMID()
	c.entry.MID = mid
	t.messages = append(t.messages, ThreadMessage{MID: mid, From: c.app, Text: text, Time: time.UnixMilli(ts).UTC()})
	s.route(c.pg, owner, c.app, event{
		kind: evEcho, pageID: c.pg.id(), psid: psid, ts: ts, mid: mid, text: text, appID: c.app, metadata: metadata,
	})
	switch {
	case pass:
		c.entry.TargetAppID = target
		c.entry.Detail = "thread_control pass"
		setOwner(c.pg, t, target, c.now)
		s.deliverTo(c.pg, target, FieldHandovers, event{
			kind: evPass, pageID: c.pg.id(), psid: psid, ts: s.stamp(c.now), prevOwner: owner, newOwner: target,
		})
	case hasControl:
		c.entry.Detail = "thread_control release"
		setOwner(c.pg, t, "", c.now)
	}
	return wireSendResult{RecipientID: psid, MessageID: mid}, nil
}
