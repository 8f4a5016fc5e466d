package sim

import (
	"encoding/json"
	"testing"
)

func TestRecipient(t *testing.T) {
	tests := []struct {
		name    string
		value   any
		want    string
		wantErr bool
	}{
		{name: "object", value: map[string]any{"id": "42"}, want: "42"},
		{name: "object with number", value: map[string]any{"id": json.Number("42")}, want: "42"},
		{name: "strict JSON string", value: `{"id":"42"}`, want: "42"},
		{name: "unquoted key and number", value: `{id:42}`, want: "42"},
		{name: "single quotes", value: `{'id':'42'}`, want: "42"},
		{name: "spaces", value: ` { id : "42" } `, want: "42"},
		{name: "bare PSID", value: "42", want: "42"},
		{name: "bare number", value: json.Number("42"), want: "42"},
		{name: "empty object", value: `{}`, wantErr: true},
		{name: "user_ref only", value: map[string]any{"user_ref": "x"}, wantErr: true},
		{name: "unbalanced quotes", value: `{'id':"42'}`, wantErr: true},
		{name: "not key:value", value: `{42}`, wantErr: true},
		{name: "nested", value: `{id:{x:1}}`, wantErr: true},
		{name: "boolean", value: true, wantErr: true},
		{name: "missing", value: nil, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := params{}
			if tc.value != nil {
				p["recipient"] = tc.value
			}
			got, gerr := p.recipient()
			if (gerr != nil) != tc.wantErr {
				t.Fatalf("recipient() error = %v, want error %v", gerr, tc.wantErr)
			}
			if gerr != nil {
				if gerr.code != 100 {
					t.Errorf("error code = %d, want 100", gerr.code)
				}
				return
			}
			if got != tc.want {
				t.Errorf("recipient() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAppIDParam(t *testing.T) {
	tests := []struct {
		name      string
		value     any
		want      string
		wantGiven bool
		wantErr   bool
	}{
		{name: "number", value: json.Number("300000000000001"), want: "300000000000001", wantGiven: true},
		{name: "numeric string", value: "300000000000001", want: "300000000000001", wantGiven: true},
		{name: "absent", value: nil},
		{name: "word", value: "bot", wantGiven: true, wantErr: true},
		{name: "float", value: json.Number("1.5"), wantGiven: true, wantErr: true},
		{name: "object", value: map[string]any{"id": "1"}, wantGiven: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := params{}
			if tc.value != nil {
				p["target_app_id"] = tc.value
			}
			got, given, gerr := p.appID("target_app_id")
			if got != tc.want || given != tc.wantGiven || (gerr != nil) != tc.wantErr {
				t.Errorf("appID() = %q, %v, %v; want %q, %v, error %v", got, given, gerr, tc.want, tc.wantGiven, tc.wantErr)
			}
		})
	}
}

// FuzzParseLooseObject checks that the relaxed object parser never panics and agrees with
// encoding/json on strict input.
func FuzzParseLooseObject(f *testing.F) {
	for _, seed := range []string{`{"id":"42"}`, `{id:42}`, `{'id':'42'}`, `{}`, `{`, `{id:}`, `{:1}`, `{"a":{"b":1}}`, `{'a:1}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseLooseObject(s)
		if err != nil {
			return
		}
		if m == nil {
			t.Fatalf("parseLooseObject(%q) = nil map without error", s)
		}
		var strict map[string]any
		if decodeJSON([]byte(s), &strict) == nil && strict != nil && len(strict) != len(m) {
			t.Fatalf("parseLooseObject(%q) = %v, encoding/json gives %v", s, m, strict)
		}
	})
}
