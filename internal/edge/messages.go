package edge

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// catalog maps message keys to the text of one language. Templates and
// handlers refer to messages only by key, so a new language is one more
// catalog in catalogs, with the same keys as english.
type catalog struct {
	// tag is the BCP 47 language tag sent in Content-Language and
	// <html lang>.
	tag      string
	messages map[string]string
	// plural returns the plural category ("one" or "other") of n.
	plural func(n int) string
}

// defaultLanguage is used when Accept-Language names no language we have,
// and for any key a catalog lacks.
const defaultLanguage = "en"

// catalogs holds every language the pages are written in, by lower-case
// language tag.
var catalogs = map[string]*catalog{
	"en": english,
}

// chooseCatalog returns the catalog that best matches an Accept-Language
// header (RFC 9110 section 12.5.4): the highest-weighted tag we have, or its
// primary language ("de-CH" matches "de"), else the default. Tags with q=0
// are excluded, and "*" means the default.
func chooseCatalog(header string) *catalog {
	type weighted struct {
		tag string
		q   float64
	}
	var ranges []weighted
	for i, part := range strings.Split(header, ",") {
		if i >= 32 {
			break
		}
		fields := strings.Split(part, ";")
		tag := strings.ToLower(strings.TrimSpace(fields[0]))
		if tag == "" {
			continue
		}
		q := 1.0
		for _, param := range fields[1:] {
			name, value, _ := strings.Cut(strings.TrimSpace(param), "=")
			if strings.EqualFold(name, "q") {
				parsed, err := strconv.ParseFloat(value, 64)
				if err != nil || parsed < 0 || parsed > 1 {
					parsed = 0
				}
				q = parsed
			}
		}
		if q > 0 {
			ranges = append(ranges, weighted{tag, q})
		}
	}
	// A stable sort keeps the header's order among equal weights.
	slices.SortStableFunc(ranges, func(a, b weighted) int {
		switch {
		case a.q > b.q:
			return -1
		case a.q < b.q:
			return 1
		}
		return 0
	})

	for _, r := range ranges {
		if r.tag == "*" {
			break
		}
		if c, ok := catalogs[r.tag]; ok {
			return c
		}
		primary, _, _ := strings.Cut(r.tag, "-")
		if c, ok := catalogs[primary]; ok {
			return c
		}
	}
	return catalogs[defaultLanguage]
}

// localizer renders messages of one catalog for the templates.
type localizer struct {
	catalog *catalog
}

func (e *Edge) localizer(r *http.Request) localizer {
	return localizer{catalog: chooseCatalog(r.Header.Get("Accept-Language"))}
}

// Lang returns the language tag of the page.
func (l localizer) Lang() string { return l.catalog.tag }

// T returns the message under key, formatted with args like fmt.Sprintf.
// A key the catalog lacks falls back to English, and a key English lacks
// (a bug the catalog tests catch) is shown as the key itself.
func (l localizer) T(key string, args ...any) string {
	text, ok := l.catalog.messages[key]
	if !ok {
		text, ok = english.messages[key]
	}
	if !ok {
		return key
	}
	if len(args) == 0 {
		return text
	}
	return fmt.Sprintf(text, args...)
}

// Minutes returns a duration as a whole number of minutes, rounded up, in
// words.
func (l localizer) Minutes(d time.Duration) string {
	n := int((d + time.Minute - 1) / time.Minute)
	n = max(n, 1)
	return l.T("duration.minutes."+l.catalog.plural(n), n)
}

// Ago returns how long ago something happened, in whole minutes, for
// people who do not live in UTC and for spotting an old request.
func (l localizer) Ago(d time.Duration) string {
	n := int(d / time.Minute)
	if n < 1 {
		return l.T("time.just_now")
	}
	return l.T("time.minutes_ago."+l.catalog.plural(n), n)
}

// Time returns a time in the catalog's format, in UTC.
//
// NOTE: Go's time layouts print English month names, so a catalog for
// another language needs a layout without them, or golang.org/x/text.
func (l localizer) Time(t time.Time) string {
	return t.UTC().Format(l.T("format.time"))
}

// DeviceKind returns the words for a device kind the edge stored in a code
// record, or the stored text when the catalog has none.
func (l localizer) DeviceKind(kind string) string {
	key := "device_kind." + strings.ReplaceAll(strings.ToLower(kind), " ", "_")
	if text := l.T(key); text != key {
		return text
	}
	return kind
}

// Scope returns what a scope lets a device do, in plain words.
func (l localizer) Scope(scope string) string {
	key := "scope." + scope
	if text := l.T(key); text != key {
		return text
	}
	return l.T("scope.other", scope)
}

// Spell returns a user code as separate characters for screen readers, so
// "BCDF-GHJK" is read letter by letter and not as a word.
func (l localizer) Spell(code string) string {
	var b strings.Builder
	for i, r := range code {
		if i > 0 {
			b.WriteByte(' ')
		}
		if r == '-' {
			b.WriteString(l.T("code.dash"))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// english is the complete catalog. Every other catalog must have the same
// keys.
var english = &catalog{
	tag: "en",
	plural: func(n int) string {
		if n == 1 {
			return "one"
		}
		return "other"
	},
	messages: map[string]string{
		"format.time":                  "2 Jan 2006, 15:04 UTC",
		"duration.minutes.one":         "%d minute",
		"duration.minutes.other":       "%d minutes",
		"code.dash":                    "dash",
		"time.just_now":                "just now",
		"time.minutes_ago.one":         "%d minute ago",
		"time.minutes_ago.other":       "%d minutes ago",
		"device_kind.smart_tv":         "Smart TV",
		"device_kind.game_console":     "Game console",
		"device_kind.phone":            "Phone",
		"device_kind.command-line_app": "Command-line app",
		"device_kind.device":           "Device",
		"device_kind.unknown_device":   "Unknown device",

		"title.enter_code": "Connect a device",
		"title.confirm":    "Is this your code?",
		"title.sign_in":    "Sign in",
		"title.consent":    "Allow this device?",
		"title.approved":   "Device connected",
		"title.denied":     "Request denied",
		"title.expired":    "Code expired",
		"title.unknown":    "Code not found",
		"title.disabled":   "Connecting this app is switched off",
		"title.limited":    "Too many attempts",
		"title.error":      "Something went wrong",
		"title.devices":    "Your devices",

		"enter.prompt": "Enter the code shown on your TV.",
		"enter.label":  "Code",
		"enter.hint":   "Eight letters, such as BCDF-GHJK. Upper or lower case, with or without the dash.",
		"enter.submit": "Continue",

		"confirm.prompt": "Check that this code matches the one on your TV.",
		"confirm.yes":    "Yes, it matches",
		"confirm.no":     "No, enter a different code",

		"signin.for_code":    "Sign in to connect the device showing this code:",
		"signin.for_devices": "Sign in to see the devices connected to your account.",
		"signin.username":    "Username",
		"signin.password":    "Password",
		"signin.submit":      "Sign in",

		"consent.signed_in_as": "Signed in as %s.",
		"signout.submit":       "Not you? Sign out",
		"consent.headline":     "%s wants to use your account.",
		"consent.application":  "Application",
		"consent.device":       "Device",
		"consent.code":         "Code on the TV",
		"consent.requested":    "Requested",
		"consent.network":      "From network",
		"consent.scopes":       "It will be able to:",
		"consent.warning":      "Only allow this if you started it yourself and the code matches your TV.",
		"consent.allow":        "Allow",
		"consent.deny":         "Deny",

		"scope.profile":        "See your profile name and viewing preferences",
		"scope.offline_access": "Stay signed in until you remove the device",
		"scope.other":          "Access “%s”",

		"result.approved": "%s is now connected to your account. You can go back to your TV.",
		"result.denied":   "The device was not connected. You can close this page.",
		"result.expired":  "This code has expired or was already used. Start again on your TV to get a new code.",
		"result.unknown":  "There is no code like that. Check the code on your TV and enter it again.",
		"result.disabled": "This app cannot be connected to accounts at the moment. Nothing was changed. Try again later.",
		"result.limited":  "There were too many wrong codes or failed sign-ins. For your safety, wait %s and try again.",
		"result.error":    "Something went wrong on our side. Please try again in a moment.",

		"link.enter_another": "Enter another code",
		"link.start_again":   "Start again",
		"link.devices":       "See your connected devices",

		"error.bad_code":     "That code isn't valid. Check the code on your TV and try again.",
		"error.expired_code": "That code has expired or was already used. Start again on your TV to get a new code.",
		"error.form_expired": "This form has expired. Please try again.",
		"error.bad_sign_in":  "The username or password is wrong.",
		"error.no_code":      "Enter the code shown on your TV.",
		"error.bad_decision": "Choose Allow or Deny.",

		"devices.intro":      "These devices can use your account. Remove any you do not recognise or no longer use.",
		"devices.none":       "No devices are connected to your account.",
		"devices.connected":  "Connected",
		"devices.last_used":  "Last used",
		"devices.never_used": "Not since it was connected",
		"devices.access":     "It can",
		"devices.remove":     "Remove %s",
		"devices.removed":    "%s was removed. It can no longer use your account.",
	},
}
