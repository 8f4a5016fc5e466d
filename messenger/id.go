package messenger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// ID is a Facebook id (app, page or PSID). Meta sends ids as JSON strings in
// some payloads and as JSON numbers in others (production webhooks carry
// new_owner_app_id as a number), and null for "no app" (an idle thread), so
// ID decodes all three; null decodes to "".
type ID string

// UnmarshalJSON accepts a JSON string, a JSON integer or null.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*id = ""
		return nil
	case len(b) > 1 && b[0] == '"' && b[len(b)-1] == '"' && bytes.IndexByte(b[1:len(b)-1], '\\') < 0 && bytes.IndexByte(b[1:len(b)-1], '"') < 0:
		// The common case, without escapes: no decoder needed.
		*id = ID(b[1 : len(b)-1])
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("id: %w", err)
		}
		*id = ID(s)
		return nil
	case len(b) > 0 && (b[0] >= '0' && b[0] <= '9'):
		// Decoded from the literal, never through float64: app ids have up to
		// 16 digits and would lose precision.
		for _, c := range b {
			if c < '0' || c > '9' {
				return fmt.Errorf("id: %s is not an integer", b)
			}
		}
		*id = ID(b)
		return nil
	}
	return fmt.Errorf("id: want a string, an integer or null, got %.40s", b)
}

// Int returns the id as an integer, for payloads that must carry numbers.
func (id ID) Int() (int64, error) { return strconv.ParseInt(string(id), 10, 64) }
