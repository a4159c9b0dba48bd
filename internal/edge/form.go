package edge

import (
	"crypto/rand"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/streamco/deviceauth/internal/oauth"
)

// maxFormBytes bounds the body of an OAuth request. The largest legitimate
// request, a refresh with a long scope list, is far smaller.
const maxFormBytes = 16 << 10

// maxParamBytes bounds any one parameter value.
const maxParamBytes = 2048

// parseForm reads an OAuth request body strictly: form-encoded, at most
// maxFormBytes, valid UTF-8, and no parameter given twice (RFC 6749
// section 3.2). Parameters in the query string are ignored.
func parseForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/x-www-form-urlencoded" {
		return nil, oauth.ErrInvalidRequest.
			WithDescription("Content-Type must be application/x-www-form-urlencoded.").
			WithStatus(http.StatusUnsupportedMediaType)
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, oauth.ErrInvalidRequest.
			WithDescription("The request body is larger than %d bytes.", maxFormBytes).
			WithStatus(http.StatusRequestEntityTooLarge)
	}
	if err != nil {
		return nil, oauth.ErrInvalidRequest.WithDescription("The request body could not be read.").WithCause(err)
	}

	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, oauth.ErrInvalidRequest.WithDescription("The request body is not valid form encoding.")
	}
	for name, values := range form {
		if len(values) > 1 {
			return nil, oauth.ErrInvalidRequest.WithDescription("Parameter %q is repeated.", name)
		}
		if !utf8.ValidString(name) || !utf8.ValidString(values[0]) {
			return nil, oauth.ErrInvalidRequest.WithDescription("Parameters must be valid UTF-8.")
		}
		if len(values[0]) > maxParamBytes {
			return nil, oauth.ErrInvalidRequest.WithDescription("Parameter %q is longer than %d bytes.", name, maxParamBytes)
		}
	}
	return form, nil
}

// parseScope splits a scope parameter (RFC 6749 section 3.3) and drops
// repeats.
func parseScope(raw string) ([]string, error) {
	var scopes []string
	for _, s := range strings.Split(raw, " ") {
		if s == "" {
			continue
		}
		for _, c := range s {
			// scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
			if c < 0x21 || c == 0x22 || c == 0x5C || c > 0x7E {
				return nil, oauth.ErrInvalidScope.WithDescription("The scope contains an invalid character.")
			}
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return scopes, nil
}

func requestID() string { return rand.Text()[:12] }
