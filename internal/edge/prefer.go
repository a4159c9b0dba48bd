package edge

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// preferWait returns the "wait" preference from Prefer header values
// (RFC 7240): a comma-separated list of preferences, each a token with an
// optional value and parameters after semicolons. Names are
// case-insensitive. The first wait preference counts.
func preferWait(headers []string) (seconds int, ok bool) {
	for _, header := range headers {
		for _, pref := range strings.Split(header, ",") {
			nameValue, _, _ := strings.Cut(pref, ";")
			name, value, hasValue := strings.Cut(strings.TrimSpace(nameValue), "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") || !hasValue {
				continue
			}
			value = strings.Trim(strings.TrimSpace(value), `"`)
			n, err := strconv.Atoi(value)
			if errors.Is(err, strconv.ErrRange) && value != "" && value[0] != '-' && value[0] != '+' {
				// Digits beyond an int still request the longest wait,
				// which the caller caps.
				return math.MaxInt, true
			}
			if err != nil || n < 0 {
				return 0, false
			}
			return n, true
		}
	}
	return 0, false
}
