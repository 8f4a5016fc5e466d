package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

const maxBodyBytes = 1 << 20

// params are a Graph call's parameters, merged from the query string, a form body and a JSON
// body (later sources win). Values are strings (query, form) or decoded JSON values with
// numbers kept as json.Number.
type params map[string]any

// readParams merges the request's query string and body into params.
func readParams(r *http.Request) (params, error) {
	p := params{}
	for k, vs := range r.URL.Query() {
		p[k] = vs[0]
	}
	if r.Body == nil || r.Method == http.MethodGet {
		return p, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return p, fmt.Errorf("read body: %w", err)
	}
	if len(body) > maxBodyBytes {
		return p, errors.New("request body is larger than 1 MiB")
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return p, nil
	}
	ctype, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case ctype == "application/json" || (ctype != "multipart/form-data" && trimmed[0] == '{'):
		var m map[string]any
		if err := decodeJSON(trimmed, &m); err != nil {
			return p, fmt.Errorf("body is not a JSON object: %w", err)
		}
		for k, v := range m {
			p[k] = v
		}
	case ctype == "multipart/form-data":
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := r.ParseMultipartForm(maxBodyBytes); err != nil {
			return p, fmt.Errorf("multipart body: %w", err)
		}
		for k, vs := range r.MultipartForm.Value {
			p[k] = vs[0]
		}
	default:
		form, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return p, fmt.Errorf("form body: %w", err)
		}
		for k, vs := range form {
			p[k] = vs[0]
		}
	}
	return p, nil
}

func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// str returns a parameter as text; objects and arrays come back as their JSON. A JSON null
// counts as absent.
func (p params) str(name string) (string, bool) {
	switch v := p[name].(type) {
	case nil:
		return "", false
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	default:
		b, _ := json.Marshal(v)
		return string(b), true
	}
}

// object returns a parameter that holds an object, given as a JSON object or as a string
// holding one (strict JSON, or relaxed with unquoted keys or single quotes).
func (p params) object(name string) (map[string]any, bool, error) {
	switch v := p[name].(type) {
	case nil:
		return nil, false, nil
	case map[string]any:
		return v, true, nil
	case string:
		m, err := parseLooseObject(v)
		return m, true, err
	default:
		return nil, true, fmt.Errorf("param %s must be an object", name)
	}
}

// recipient returns the PSID named by the recipient parameter: an object {"id": ...}, a string
// holding one, or (as thread_owner takes it) the bare PSID.
func (p params) recipient() (string, *graphError) {
	v, ok := p["recipient"]
	if !ok || v == nil {
		return "", errParam("The parameter recipient is required")
	}
	var m map[string]any
	switch v := v.(type) {
	case map[string]any:
		m = v
	case json.Number:
		return v.String(), nil
	case string:
		s := strings.TrimSpace(v)
		if !strings.HasPrefix(s, "{") {
			if s == "" {
				return "", errParam("The parameter recipient is required")
			}
			return s, nil
		}
		var err error
		if m, err = parseLooseObject(s); err != nil {
			return "", errParam("Param recipient must be an object like {\"id\":\"<PSID>\"}: %v", err)
		}
	default:
		return "", errParam("Param recipient must be an object like {\"id\":\"<PSID>\"}")
	}
	id, ok := idValue(m["id"])
	if !ok || id == "" {
		if len(m) > 0 && m["id"] == nil {
			return "", errParam("The simulator only addresses recipients by id (PSID)")
		}
		return "", errParam("Param recipient[id] must be a PSID")
	}
	return id, nil
}

// appID returns an app id parameter, given as a JSON number or a numeric string.
func (p params) appID(name string) (string, bool, *graphError) {
	v, ok := p[name]
	if !ok || v == nil {
		return "", false, nil
	}
	id, ok := idValue(v)
	if !ok || !isNumericID(id) {
		return "", true, errParam("Param %s must be a valid app ID", name)
	}
	return id, true, nil
}

// idValue reads an id written as a string or a number.
func idValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return strings.TrimSpace(v), true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// parseLooseObject parses a flat object literal as Meta's docs write them: strict JSON
// {"id":"1"}, or relaxed {id:1} and {'id':'1'}. Relaxed values cannot contain commas, colons
// or nested objects.
func parseLooseObject(s string) (map[string]any, error) {
	var m map[string]any
	if err := decodeJSON([]byte(s), &m); err == nil && m != nil {
		return m, nil
	}
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, errors.New("not an object literal")
	}
	m = map[string]any{}
	body := strings.TrimSpace(s[1 : len(s)-1])
	if body == "" {
		return m, nil
	}
	for _, pair := range strings.Split(body, ",") {
		k, v, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, fmt.Errorf("%q is not key:value", strings.TrimSpace(pair))
		}
		key, err := unquoteLoose(k)
		if err != nil || key == "" {
			return nil, fmt.Errorf("bad key %q", strings.TrimSpace(k))
		}
		val, err := unquoteLoose(v)
		if err != nil {
			return nil, fmt.Errorf("bad value %q", strings.TrimSpace(v))
		}
		m[key] = val
	}
	return m, nil
}

// unquoteLoose trims a relaxed literal and removes matching single or double quotes.
func unquoteLoose(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') {
		if s[len(s)-1] != s[0] {
			return "", errors.New("unbalanced quotes")
		}
		s = s[1 : len(s)-1]
	}
	if strings.ContainsAny(s, "{}[]\"'") {
		return "", errors.New("nested or unbalanced literal")
	}
	return s, nil
}
