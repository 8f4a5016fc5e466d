package server_test

import (
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/server"
)

// TestNotices checks that a webhook's events reach the engine field by
// field, with their channel, in order, and that Meta's kinds are the names
// the engine translates.
func TestNotices(t *testing.T) {
	body := []byte(`{"object":"page","entry":[
	 {"id":"100","time":1,"messaging":[
	   {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":1700000000001,"message":{"mid":"m.1","text":"hi"}},
	   {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":1700000000002,"pass_thread_control":{"previous_owner_app_id":300,"new_owner_app_id":"200"}},
	   {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":1700000000003,"take_thread_control":{"previous_owner_app_id":"200","new_owner_app_id":300}},
	   {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":1700000000004,"request_thread_control":{"requested_owner_app_id":300}},
	   {"recipient":{"id":"100"},"timestamp":1700000000005,"app_roles":{"200":["primary_receiver"]}}],
	  "standby":[
	   {"sender":{"id":"8"},"recipient":{"id":"100"},"timestamp":1700000000006,"postback":{"title":"t","payload":"p"}}]}]}`)
	w, err := messenger.ParseWebhook(body)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(n int64) time.Time { return time.UnixMilli(1700000000000 + n) }
	want := []engine.Notice{
		{PageID: "100", PSID: "7", Channel: engine.ChannelMessaging, Kind: engine.NoticeMessage, Time: ms(1), MID: "m.1"},
		{PageID: "100", PSID: "7", Channel: engine.ChannelMessaging, Kind: engine.NoticePass, Time: ms(2), PrevOwner: "300", NewOwner: "200"},
		{PageID: "100", PSID: "7", Channel: engine.ChannelMessaging, Kind: engine.NoticeTake, Time: ms(3), PrevOwner: "200", NewOwner: "300"},
		{PageID: "100", PSID: "7", Channel: engine.ChannelMessaging, Kind: engine.NoticeRequest, Time: ms(4), Requester: "300"},
		{PageID: "100", PSID: "", Channel: engine.ChannelMessaging, Kind: engine.NoticeAppRoles, Time: ms(5), Roles: map[string][]string{"200": {"primary_receiver"}}},
		{PageID: "100", PSID: "8", Channel: engine.ChannelStandby, Kind: engine.NoticePostback, Time: ms(6)},
	}
	got := server.Notices(w)
	if len(got) != len(want) {
		t.Fatalf("got %d notices, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.PageID != w.PageID || g.PSID != w.PSID || g.Channel != w.Channel || g.Kind != w.Kind || !g.Time.Equal(w.Time) ||
			g.MID != w.MID || g.PrevOwner != w.PrevOwner || g.NewOwner != w.NewOwner || g.Requester != w.Requester || len(g.Roles) != len(w.Roles) {
			t.Errorf("notice %d = %+v, want %+v", i, g, w)
		}
	}
}
