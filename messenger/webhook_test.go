package messenger

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestIDDecodes(t *testing.T) {
	tests := []struct {
		name, in string
		want     ID
		wantErr  bool
	}{
		{"string", `"123456789"`, "123456789", false},
		{"string with an escape", `"12\u0033"`, "123", false},
		{"number", `976665718578167`, "976665718578167", false},
		{"sixteen digits keep precision", `9007199254740993`, "9007199254740993", false},
		{"null is idle", `null`, "", false},
		{"float refused", `1.5`, "", true},
		{"negative refused", `-1`, "", true},
		{"object refused", `{}`, "", true},
		{"bool refused", `true`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got ID
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Unmarshal(%s) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Unmarshal(%s) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// Samples from Meta's webhook reference (meta-handover-protocol.md §6), in the
// shapes production sends (numbers, strings, nulls, both channels).
func TestParseWebhookSamples(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		kinds    []string // kinds of every event, entry by entry
		standby  []bool
		customer ID
		check    func(t *testing.T, w *Webhook)
	}{
		{
			name:     "message",
			body:     `{"object":"page","entry":[{"id":"PAGE","time":1458692752478,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1458692752478,"message":{"mid":"mid.1457764197618:41d102a3e1ae206a38","text":"hello, world!","quick_reply":{"payload":"P"}}}]}]}`,
			kinds:    []string{KindMessage},
			standby:  []bool{false},
			customer: "PSID",
			check: func(t *testing.T, w *Webhook) {
				m := w.Entry[0].Messaging[0].Message
				if m.Text != "hello, world!" || m.QuickReply.Payload != "P" {
					t.Errorf("message = %+v", m)
				}
			},
		},
		{
			name:     "standby message with seq",
			body:     `{"object":"page","entry":[{"id":"441865839900774","time":1554485257837,"standby":[{"sender":{"id":"2031835813581292"},"recipient":{"id":"441865839900774"},"timestamp":1554485257837,"message":{"mid":"wM0FT4NCP","seq":154965,"text":"test"}}]}]}`,
			kinds:    []string{KindMessage},
			standby:  []bool{true},
			customer: "2031835813581292",
		},
		{
			name:     "pass from idle, numeric new owner",
			body:     `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"1"},"timestamp":1458692752478,"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":976665718578167,"metadata":"{\"k\":1}"}}]}]}`,
			kinds:    []string{KindPassThreadControl},
			standby:  []bool{false},
			customer: "PSID",
			check: func(t *testing.T, w *Webhook) {
				p := w.Entry[0].Messaging[0].PassThreadControl
				if p.PreviousOwnerAppID != "" || p.NewOwnerAppID != "976665718578167" || p.Metadata != `{"k":1}` {
					t.Errorf("pass = %+v", p)
				}
			},
		},
		{
			name:     "take with string ids",
			body:     `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"1"},"timestamp":2,"take_thread_control":{"previous_owner_app_id":"123456789","new_owner_app_id":"555","metadata":"m"}}]}]}`,
			kinds:    []string{KindTakeThreadControl},
			standby:  []bool{false},
			customer: "PSID",
			check: func(t *testing.T, w *Webhook) {
				tk := w.Entry[0].Messaging[0].TakeThreadControl
				if tk.PreviousOwnerAppID != "123456789" || tk.NewOwnerAppID != "555" {
					t.Errorf("take = %+v", tk)
				}
			},
		},
		{
			name:     "request, numeric requester",
			body:     `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"1"},"timestamp":3,"request_thread_control":{"requested_owner_app_id":123456789,"metadata":"x"}}]}]}`,
			kinds:    []string{KindRequestThreadControl},
			standby:  []bool{false},
			customer: "PSID",
			check: func(t *testing.T, w *Webhook) {
				if got := w.Entry[0].Messaging[0].RequestThreadControl.RequestedOwnerAppID; got != "123456789" {
					t.Errorf("requested_owner_app_id = %q", got)
				}
			},
		},
		{
			name:    "app_roles has no sender",
			body:    `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"recipient":{"id":"1"},"timestamp":1458692752478,"app_roles":{"123456789":["primary_receiver"]}}]}]}`,
			kinds:   []string{KindAppRoles},
			standby: []bool{false},
			check: func(t *testing.T, w *Webhook) {
				if got := w.Entry[0].Messaging[0].AppRoles["123456789"]; len(got) != 1 || got[0] != "primary_receiver" {
					t.Errorf("app_roles = %v", got)
				}
			},
		},
		{
			name:     "echo names the customer as recipient",
			body:     `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"1"},"recipient":{"id":"PSID"},"timestamp":4,"message":{"is_echo":true,"app_id":263902037430900,"metadata":"m","mid":"x","text":"hi \u00e4 https:\/\/x"}}]}]}`,
			kinds:    []string{KindEcho},
			standby:  []bool{false},
			customer: "PSID",
			check: func(t *testing.T, w *Webhook) {
				m := w.Entry[0].Messaging[0].Message
				if m.AppID != "263902037430900" || m.Text != "hi ä https://x" {
					t.Errorf("echo = %+v", m)
				}
			},
		},
		{
			name:    "several entries, both channels",
			body:    `{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"A"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"a","text":"a"}}]},{"id":"2","time":1,"standby":[{"sender":{"id":"B"},"recipient":{"id":"2"},"timestamp":6,"message":{"mid":"b","text":"b"}}]}]}`,
			kinds:   []string{KindMessage, KindMessage},
			standby: []bool{false, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseWebhook([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseWebhook: %v", err)
			}
			var kinds []string
			var standby []bool
			for _, en := range w.Entry {
				for i := range en.Messaging {
					kinds = append(kinds, en.Messaging[i].Kind())
					standby = append(standby, false)
				}
				for i := range en.Standby {
					kinds = append(kinds, en.Standby[i].Kind())
					standby = append(standby, true)
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tt.kinds, ",") {
				t.Errorf("kinds = %v, want %v", kinds, tt.kinds)
			}
			for i := range standby {
				if standby[i] != tt.standby[i] {
					t.Errorf("event %d standby = %v, want %v", i, standby[i], tt.standby[i])
				}
			}
			if tt.customer != "" {
				en := w.Entry[0]
				ev := append(en.Messaging, en.Standby...)[0]
				if got := ev.CustomerID(); got != tt.customer {
					t.Errorf("CustomerID() = %q, want %q", got, tt.customer)
				}
			}
			if tt.check != nil {
				tt.check(t, w)
			}
		})
	}
}

func TestParseWebhookRejects(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not json", `{"object":`, "not valid JSON"},
		{"wrong object", `{"object":"instagram","entry":[{"id":"1"}]}`, `"instagram"`},
		{"no entry", `{"object":"page","entry":[]}`, "no entry"},
		{"entry without page", `{"object":"page","entry":[{"time":1}]}`, "no page id"},
		{"event without customer", `{"object":"page","entry":[{"id":"1","messaging":[{"recipient":{"id":"1"},"message":{"mid":"x"}}]}]}`, "no customer id"},
		{"bad app id", `{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"P"},"pass_thread_control":{"new_owner_app_id":1.5}}]}]}`, "not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseWebhook([]byte(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseWebhook error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"P"},"message":{"mid":"m","text":"\u00e4\u00f6\u00e5"}}]}]}`)
	good, sha1 := Sign(body, "secret")
	if !strings.HasPrefix(sha1, "sha1=") || len(sha1) != len("sha1=")+40 {
		t.Errorf("sha1 header = %q", sha1)
	}
	tests := []struct {
		name    string
		header  string
		secrets []string
		wantErr error
	}{
		{"good", good, []string{"secret"}, nil},
		{"good among several secrets", good, []string{"other", "secret"}, nil},
		{"wrong secret", good, []string{"other"}, ErrBadSignature},
		{"missing", "", []string{"secret"}, ErrNoSignature},
		{"sha1 only", sha1, []string{"secret"}, ErrBadSignature},
		{"not hex", "sha256=zz", []string{"secret"}, ErrBadSignature},
		{"truncated", good[:len(good)-2], []string{"secret"}, ErrBadSignature},
		{"upper-case hex is the same bytes", "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), []string{"secret"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySignature(body, tt.header, tt.secrets...)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifySignature = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// One changed byte of the body fails.
	tampered := append([]byte{}, body...)
	tampered[len(tampered)-3] ^= 1
	if err := VerifySignature(tampered, good, "secret"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered body: VerifySignature = %v, want ErrBadSignature", err)
	}
}

func TestVerifyChallenge(t *testing.T) {
	tests := []struct {
		name, mode, token, challenge string
		wantErr                      bool
	}{
		{"ok", "subscribe", "dev-verify", "1158201444", false},
		{"wrong token", "subscribe", "nope", "1", true},
		{"wrong mode", "unsubscribe", "dev-verify", "1", true},
		{"no challenge", "subscribe", "dev-verify", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyChallenge(tt.mode, tt.token, tt.challenge, "dev-verify")
			if (err != nil) != tt.wantErr {
				t.Fatalf("VerifyChallenge error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.challenge {
				t.Errorf("VerifyChallenge = %q, want %q", got, tt.challenge)
			}
		})
	}
}

func FuzzParseWebhook(f *testing.F) {
	f.Add([]byte(`{"object":"page","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"P"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"a","text":"a"}}]}]}`))
	f.Add([]byte(`{"object":"page","entry":[{"id":1,"standby":[{"sender":{"id":2},"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":"3"}}]}]}`))
	f.Add([]byte(`{"object":"page","entry":[{"id":"1","messaging":[{"recipient":{"id":"1"},"app_roles":{"1":["primary_receiver"]}}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := ParseWebhook(body)
		if err != nil {
			return
		}
		// Whatever is accepted has what the engine relies on.
		for _, en := range w.Entry {
			if en.ID == "" {
				t.Fatal("accepted an entry without page id")
			}
			for _, ev := range append(en.Messaging, en.Standby...) {
				if ev.Kind() != KindAppRoles && ev.CustomerID() == "" {
					t.Fatal("accepted an event without customer")
				}
			}
		}
		// And it survives a round trip through its own encoding.
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := ParseWebhook(b); err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	f.Add([]byte(`{"object":"page"}`), "secret", "")
	f.Add([]byte(``), "", "sha256=00")
	f.Fuzz(func(t *testing.T, body []byte, secret, header string) {
		good, _ := Sign(body, secret)
		if err := VerifySignature(body, good, secret); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
		if header != good && VerifySignature(body, header, secret) == nil {
			// Only the exact signature (in any hex case) may pass.
			if !strings.EqualFold(header, good) {
				t.Fatalf("accepted header %q for signature %q", header, good)
			}
		}
	})
}
