package edge

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamco/deviceauth/internal/oauth"
)

func FuzzParseForm(f *testing.F) {
	for _, seed := range []struct{ contentType, body string }{
		{"application/x-www-form-urlencoded", "grant_type=refresh_token&client_id=tv-app"},
		{"application/x-www-form-urlencoded; charset=UTF-8", "a=1&a=2"},
		{"application/x-www-form-urlencoded", "%zz=%ff"},
		{"application/json", `{"a":1}`},
		{"", ""},
		{"application/x-www-form-urlencoded", strings.Repeat("x", maxFormBytes+1)},
	} {
		f.Add(seed.contentType, seed.body)
	}

	f.Fuzz(func(t *testing.T, contentType, body string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		form, err := parseForm(httptest.NewRecorder(), req)
		if err != nil {
			var oe *oauth.Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v is not an OAuth error", err)
			}
			if oe.Status < 400 || oe.Status >= 500 {
				t.Fatalf("status %d for malformed input, want 4xx", oe.Status)
			}
			return
		}
		for name, values := range form {
			if len(values) != 1 {
				t.Fatalf("parameter %q accepted %d times", name, len(values))
			}
			if len(values[0]) > maxParamBytes {
				t.Fatalf("parameter %q accepted with %d bytes", name, len(values[0]))
			}
		}
	})
}
