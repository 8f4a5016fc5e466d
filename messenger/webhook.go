package messenger

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Webhook is one POST of Meta's webhooks for the "page" object: one or more
// entries, each for one page, each carrying events in messaging[] (the app
// owns the thread, or it is idle) or standby[] (another app owns it).
type Webhook struct {
	Object string  `json:"object"`
	Entry  []Entry `json:"entry"`
}

// Entry is one entry of a webhook: a page and its events.
type Entry struct {
	ID         ID               `json:"id"`
	Time       int64            `json:"time"`
	Messaging  []MessagingEvent `json:"messaging"`
	Standby    []MessagingEvent `json:"standby"`
	HopContext []HopContext     `json:"hop_context,omitempty"`
}

// HopContext is the lead-ads handover context some entries carry.
type HopContext struct {
	AppID    ID     `json:"app_id"`
	Metadata string `json:"metadata"`
}

// Party is the sender or recipient of an event.
type Party struct {
	ID ID `json:"id"`
}

// MessagingEvent is one messaging or standby event. Exactly one of its payload fields
// is normally set; Kind names it.
type MessagingEvent struct {
	Sender    Party `json:"sender"`
	Recipient Party `json:"recipient"`
	Timestamp int64 `json:"timestamp"`

	Message              *Message              `json:"message,omitempty"`
	Postback             *Postback             `json:"postback,omitempty"`
	Read                 *json.RawMessage      `json:"read,omitempty"`
	Delivery             *json.RawMessage      `json:"delivery,omitempty"`
	PassThreadControl    *PassThreadControl    `json:"pass_thread_control,omitempty"`
	TakeThreadControl    *TakeThreadControl    `json:"take_thread_control,omitempty"`
	RequestThreadControl *RequestThreadControl `json:"request_thread_control,omitempty"`
	AppRoles             map[string][]string   `json:"app_roles,omitempty"`
}

// Message is a message event, or an echo of a message a page's app sent.
type Message struct {
	MID         string          `json:"mid"`
	Text        string          `json:"text,omitempty"`
	IsEcho      bool            `json:"is_echo,omitempty"`
	AppID       ID              `json:"app_id,omitempty"`
	Metadata    string          `json:"metadata,omitempty"`
	QuickReply  *QuickReply     `json:"quick_reply,omitempty"`
	Attachments json.RawMessage `json:"attachments,omitempty"`
}

// QuickReply is the payload of a tapped quick reply.
type QuickReply struct {
	Payload string `json:"payload"`
}

// Postback is a tapped button's postback.
type Postback struct {
	MID     string `json:"mid,omitempty"`
	Title   string `json:"title"`
	Payload string `json:"payload"`
}

// PassThreadControl is the event the new owner receives when control is
// passed to it. PreviousOwnerAppID is "" when the thread was idle.
type PassThreadControl struct {
	PreviousOwnerAppID ID     `json:"previous_owner_app_id"`
	NewOwnerAppID      ID     `json:"new_owner_app_id"`
	Metadata           string `json:"metadata,omitempty"`
}

// TakeThreadControl is the event the previous owner receives when another
// app takes control.
type TakeThreadControl struct {
	PreviousOwnerAppID ID     `json:"previous_owner_app_id"`
	NewOwnerAppID      ID     `json:"new_owner_app_id"`
	Metadata           string `json:"metadata,omitempty"`
}

// RequestThreadControl is the event the owner receives when another app asks
// for control.
type RequestThreadControl struct {
	RequestedOwnerAppID ID     `json:"requested_owner_app_id"`
	Metadata            string `json:"metadata,omitempty"`
}

// Event kinds, as returned by MessagingEvent.Kind.
const (
	KindMessage              = "message"
	KindEcho                 = "echo"
	KindPostback             = "postback"
	KindRead                 = "read"
	KindDelivery             = "delivery"
	KindPassThreadControl    = "pass_thread_control"
	KindTakeThreadControl    = "take_thread_control"
	KindRequestThreadControl = "request_thread_control"
	KindAppRoles             = "app_roles"
	KindUnknown              = "unknown"
)

// Kind names the event's payload.
func (e *MessagingEvent) Kind() string {
	switch {
	case e.Message != nil && e.Message.IsEcho:
		return KindEcho
	case e.Message != nil:
		return KindMessage
	case e.Postback != nil:
		return KindPostback
	case e.PassThreadControl != nil:
		return KindPassThreadControl
	case e.TakeThreadControl != nil:
		return KindTakeThreadControl
	case e.RequestThreadControl != nil:
		return KindRequestThreadControl
	case len(e.AppRoles) > 0:
		return KindAppRoles
	case e.Read != nil:
		return KindRead
	case e.Delivery != nil:
		return KindDelivery
	}
	return KindUnknown
}

// Time is the event's timestamp (Meta sends milliseconds).
func (e *MessagingEvent) Time() time.Time { return time.UnixMilli(e.Timestamp) }

// CustomerID is the PSID of the customer the event is about: the sender of
// customer events, the recipient of echoes.
func (e *MessagingEvent) CustomerID() ID {
	if e.Message != nil && e.Message.IsEcho {
		return e.Recipient.ID
	}
	return e.Sender.ID
}

// maxTimestamp is the last millisecond of year 9999, the latest time a
// timestamp can name (and be written back as JSON).
const maxTimestamp = 253402300799999

// ParseWebhook decodes a webhook body and checks what threadctl relies on:
// the page object, and for every entry a page id and events with a customer.
func ParseWebhook(body []byte) (*Webhook, error) {
	var w Webhook
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("webhook body is not valid JSON of Meta's shape: %w", err)
	}
	if w.Object != "page" {
		return nil, fmt.Errorf("webhook object is %q, want \"page\"", w.Object)
	}
	if len(w.Entry) == 0 {
		return nil, errors.New("webhook has no entry")
	}
	for i, en := range w.Entry {
		if en.ID == "" {
			return nil, fmt.Errorf("webhook entry %d has no page id", i)
		}
		for _, list := range [][]MessagingEvent{en.Messaging, en.Standby} {
			for j := range list {
				ev := &list[j]
				if ev.Timestamp < 0 || ev.Timestamp > maxTimestamp {
					return nil, fmt.Errorf("webhook entry %d event %d (%s) has timestamp %d, not milliseconds between 1970 and 9999", i, j, ev.Kind(), ev.Timestamp)
				}
				if ev.Kind() == KindAppRoles {
					continue // app_roles has no sender
				}
				if ev.CustomerID() == "" {
					return nil, fmt.Errorf("webhook entry %d event %d (%s) has no customer id", i, j, ev.Kind())
				}
			}
		}
	}
	return &w, nil
}

// Signature errors.
var (
	ErrNoSignature  = errors.New("missing X-Hub-Signature-256 header")
	ErrBadSignature = errors.New("X-Hub-Signature-256 does not match the body")
)

// VerifySignature checks an X-Hub-Signature-256 header ("sha256=<hex>") over
// the raw body against each app secret, in constant time.
func VerifySignature(body []byte, header string, appSecrets ...string) error {
	if header == "" {
		return ErrNoSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return fmt.Errorf("%w: want sha256=<hex>", ErrBadSignature)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: not a hex SHA-256", ErrBadSignature)
	}
	match := false
	for _, s := range appSecrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write(body)
		if hmac.Equal(got, m.Sum(nil)) {
			match = true
		}
	}
	if !match {
		return ErrBadSignature
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 and legacy X-Hub-Signature header
// values of body for an app secret, as Meta sends them.
func Sign(body []byte, appSecret string) (sha256Header, sha1Header string) {
	m := hmac.New(sha256.New, []byte(appSecret))
	m.Write(body)
	m1 := hmac.New(sha1.New, []byte(appSecret))
	m1.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil)), "sha1=" + hex.EncodeToString(m1.Sum(nil))
}

// ErrVerification is returned for a failed webhook verification handshake.
var ErrVerification = errors.New("webhook verification failed")

// VerifyChallenge answers Meta's GET verification handshake: it returns the
// challenge to echo when mode is "subscribe" and token matches verifyToken.
func VerifyChallenge(mode, token, challenge, verifyToken string) (string, error) {
	switch {
	case mode != "subscribe":
		return "", fmt.Errorf("%w: hub.mode is %q, want \"subscribe\"", ErrVerification, mode)
	case verifyToken == "" || !hmac.Equal([]byte(token), []byte(verifyToken)):
		return "", fmt.Errorf("%w: hub.verify_token does not match", ErrVerification)
	case challenge == "":
		return "", fmt.Errorf("%w: hub.challenge is empty", ErrVerification)
	}
	return challenge, nil
}
