package edge

import (
	"math"
	"testing"
)

func TestPreferWait(t *testing.T) {
	cases := []struct {
		name    string
		headers []string
		seconds int
		ok      bool
	}{
		{"absent", nil, 0, false},
		{"plain", []string{"wait=10"}, 10, true},
		{"case and spaces", []string{" Wait = 7 "}, 7, true},
		{"quoted", []string{`wait="5"`}, 5, true},
		{"among others", []string{"respond-async, wait=15; foo=bar, handling=lenient"}, 15, true},
		{"second header", []string{"return=minimal", "wait=3"}, 3, true},
		{"no value", []string{"wait"}, 0, false},
		{"negative", []string{"wait=-1"}, 0, false},
		{"not a number", []string{"wait=soon"}, 0, false},
		{"beyond an int", []string{"wait=99999999999999999999"}, math.MaxInt, true},
		{"below an int", []string{"wait=-99999999999999999999"}, 0, false},
		{"other preference only", []string{"respond-async"}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seconds, ok := preferWait(tc.headers)
			if ok != tc.ok {
				t.Errorf("ok = %v, want %v", ok, tc.ok)
			}
			if seconds != tc.seconds {
				t.Errorf("seconds = %d, want %d", seconds, tc.seconds)
			}
		})
	}
}

func TestAddressNetwork(t *testing.T) {
	cases := map[string]string{
		"203.0.113.77:5555":        "203.0.113.0/24",
		"[2001:db8:1:2::9]:443":    "2001:db8:1::/48",
		"[::ffff:198.51.100.9]:80": "198.51.100.0/24",
		"not an address":           "",
	}
	for remote, want := range cases {
		if got := addressNetwork(remote); got != want {
			t.Errorf("addressNetwork(%q) = %q, want %q", remote, got, want)
		}
	}
}
