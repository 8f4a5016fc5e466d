package engine_test

import (
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// TestTranslate checks what each kind of Meta webhook event means for a
// thread, from the RingCX app's point of view.
func TestTranslate(t *testing.T) {
	page := engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}
	at := time.UnixMilli(1700000000123)
	n := func(kind string) engine.Notice {
		return engine.Notice{PageID: pageID, PSID: "7", Channel: engine.ChannelStandby, Kind: kind, Time: at}
	}
	with := func(nt engine.Notice, f func(*engine.Notice)) engine.Notice { f(&nt); return nt }
	tests := []struct {
		name     string
		notice   engine.Notice
		event    states.Event
		observed states.Observed
		app      string
		dedup    string
	}{
		{"message", with(n(engine.NoticeMessage), func(x *engine.Notice) { x.MID = "m.1" }), states.CustomerMessage, "", "", "mid:m.1"},
		{"message without mid", n(engine.NoticeMessage), states.CustomerMessage, "", "", "message:1700000000123"},
		{"postback", n(engine.NoticePostback), states.CustomerMessage, "", "", "postback:1700000000123"},
		{"pass to RingCX", with(n(engine.NoticePass), func(x *engine.Notice) { x.PrevOwner, x.NewOwner = botID, ringcxID }), states.ControlPassed, "", ringcxID, "pass:1700000000123:" + botID + ":" + ringcxID},
		{"pass to another app", with(n(engine.NoticePass), func(x *engine.Notice) { x.PrevOwner, x.NewOwner = botID, bot2ID }), states.OwnerObserved, states.ObservedOther, bot2ID, "pass:1700000000123:" + botID + ":" + bot2ID},
		{"take from RingCX", with(n(engine.NoticeTake), func(x *engine.Notice) { x.PrevOwner, x.NewOwner = ringcxID, botID }), states.ControlTaken, "", botID, "take:1700000000123:" + ringcxID + ":" + botID},
		{"take, hop_v1 shape", with(n(engine.NoticeTake), func(x *engine.Notice) { x.NewOwner = botID }), states.ControlTaken, "", botID, "take:1700000000123::" + botID},
		{"take between other apps", with(n(engine.NoticeTake), func(x *engine.Notice) { x.PrevOwner, x.NewOwner = bot2ID, botID }), states.OwnerObserved, states.ObservedOther, botID, "take:1700000000123:" + bot2ID + ":" + botID},
		{"request by a bot", with(n(engine.NoticeRequest), func(x *engine.Notice) { x.Requester = botID }), states.ControlRequested, "", botID, "request:1700000000123:" + botID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, ok, why := engine.Translate(page, tc.notice)
			if !ok {
				t.Fatalf("not translated: %s", why)
			}
			if in.Event != tc.event || in.Observed != tc.observed || in.AppID != tc.app || in.DedupKey != tc.dedup {
				t.Errorf("got %s(%s) app %q dedup %q, want %s(%s) app %q dedup %q", in.Event, in.Observed, in.AppID, in.DedupKey, tc.event, tc.observed, tc.app, tc.dedup)
			}
			if in.Cause != engine.CauseWebhook || !in.Create || !in.MetaTime.Equal(at) || in.Channel != engine.ChannelStandby || in.Key != key("7") {
				t.Errorf("input %+v: want a webhook event creating thread 7, at Meta's time, on standby", in)
			}
		})
	}
	for _, skip := range []engine.Notice{
		with(n(engine.NoticeTake), func(x *engine.Notice) { x.NewOwner = ringcxID }),
		with(n(engine.NoticeRequest), func(x *engine.Notice) { x.Requester = ringcxID }),
		n(engine.NoticeAppRoles), n("echo"), n("read"),
	} {
		if in, ok, _ := engine.Translate(page, skip); ok {
			t.Errorf("%s %+v translated to %+v, want skipped", skip.Kind, skip, in)
		}
	}
}
