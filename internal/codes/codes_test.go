package codes

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func TestNormalizeUserCode(t *testing.T) {
	cases := []struct {
		input string
		want  string
		err   error
	}{
		{"BCDF-GHJK", "BCDFGHJK", nil},
		{"bcdf-ghjk", "BCDFGHJK", nil},
		{"bcdfghjk", "BCDFGHJK", nil},
		{" bcdf ghjk ", "BCDFGHJK", nil},
		{"Bc-Df-Gh-Jk", "BCDFGHJK", nil},
		{"BCDF-GHJ", "", ErrInvalidUserCode},
		{"BCDF-GHJKL", "", ErrInvalidUserCode},
		{"ABCD-GHJK", "", ErrInvalidUserCode}, // vowel
		{"BCD0-GHJK", "", ErrInvalidUserCode}, // digit
		{"BCDF_GHJK", "", ErrInvalidUserCode},
		{"ВCDF-GHJK", "", ErrInvalidUserCode}, // Cyrillic В
		{"", "", ErrInvalidUserCode},
		{strings.Repeat("B", 100), "", ErrInvalidUserCode},
	}
	for _, tc := range cases {
		got, err := NormalizeUserCode(tc.input)
		if !errors.Is(err, tc.err) {
			t.Errorf("NormalizeUserCode(%q) error %v, want %v", tc.input, err, tc.err)
		}
		if got != tc.want {
			t.Errorf("NormalizeUserCode(%q) = %q, want %q", tc.input, got, tc.want)
		}
	}
}

func TestNewUserCodeAlphabet(t *testing.T) {
	counts := make(map[rune]int)
	for range 2000 {
		code, err := NewUserCode(nil)
		if err != nil {
			t.Fatalf("NewUserCode: %v", err)
		}
		if len(code) != UserCodeLength {
			t.Fatalf("code %q has %d characters, want %d", code, len(code), UserCodeLength)
		}
		normalized, err := NormalizeUserCode(FormatUserCode(code))
		if err != nil || normalized != code {
			t.Fatalf("code %q does not survive formatting and normalising: %q, %v", code, normalized, err)
		}
		for _, r := range code {
			counts[r]++
		}
	}
	if len(counts) != len(UserCodeAlphabet) {
		t.Errorf("%d distinct characters in 16,000, want all %d", len(counts), len(UserCodeAlphabet))
	}
	for _, r := range "AEIOUY015SZ28" {
		if strings.ContainsRune(UserCodeAlphabet, r) {
			t.Errorf("alphabet contains the vowel or look-alike %q", r)
		}
	}
}

func TestFormatUserCode(t *testing.T) {
	if got := FormatUserCode("BCDFGHJK"); got != "BCDF-GHJK" {
		t.Errorf("FormatUserCode = %q, want BCDF-GHJK", got)
	}
}

func TestDeviceCode(t *testing.T) {
	a, err := NewDeviceCode(nil)
	if err != nil {
		t.Fatalf("NewDeviceCode: %v", err)
	}
	b, _ := NewDeviceCode(nil)
	if a == b {
		t.Error("two device codes are equal")
	}
	if err := CheckDeviceCode(a); err != nil {
		t.Errorf("CheckDeviceCode(%q): %v", a, err)
	}
	for _, bad := range []string{"", "short", a + "x", strings.Repeat("!", len(a))} {
		if CheckDeviceCode(bad) == nil {
			t.Errorf("CheckDeviceCode(%q) accepted a malformed code", bad)
		}
	}
}

func TestHasherSeparatesPurposes(t *testing.T) {
	h, err := NewHasher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	if h.CodeID("x") == h.UserCodeID("x") || h.CodeID("x") == h.SessionID("x") || h.SessionID("x") == h.RefreshTokenID("x") {
		t.Error("hashes of the same text for different purposes are equal")
	}
	other, _ := NewHasher(bytes.Repeat([]byte{8}, 32))
	if h.CodeID("x") == other.CodeID("x") {
		t.Error("hashes under different keys are equal")
	}
	if _, err := NewHasher(make([]byte, 16)); err == nil {
		t.Error("NewHasher accepted a 16-byte key")
	}
	if !h.ValidCSRFToken("cookie", h.CSRFToken("cookie")) {
		t.Error("CSRF token does not validate against its cookie")
	}
	if h.ValidCSRFToken("cookie", h.CSRFToken("other")) || h.ValidCSRFToken("", h.CSRFToken("")) {
		t.Error("CSRF token validates against the wrong or an empty cookie")
	}
}

func TestSealOpensOnlyWithItsDeviceCode(t *testing.T) {
	code, _ := NewDeviceCode(nil)
	key, err := SealKey(code)
	if err != nil {
		t.Fatalf("SealKey: %v", err)
	}
	sealed, err := Seal(key, []byte("token response"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Contains(sealed, []byte("token response")) {
		t.Error("sealed bytes contain the plaintext")
	}

	opened, err := Open(code, sealed)
	if err != nil || string(opened) != "token response" {
		t.Errorf("Open = %q, %v; want the plaintext", opened, err)
	}

	other, _ := NewDeviceCode(rand.Reader)
	if _, err := Open(other, sealed); !errors.Is(err, ErrSealOpen) {
		t.Errorf("Open with another device code: %v, want ErrSealOpen", err)
	}
}

func FuzzNormalizeUserCode(f *testing.F) {
	for _, seed := range []string{"BCDF-GHJK", "bcdf ghjk", "", "----", "ВCDF-GHJK", "\xff\xfe"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		code, err := NormalizeUserCode(input)
		if err != nil {
			return
		}
		if len(code) != UserCodeLength {
			t.Fatalf("normalised %q to %q of length %d", input, code, len(code))
		}
		for _, r := range code {
			if !strings.ContainsRune(UserCodeAlphabet, r) {
				t.Fatalf("normalised %q to %q with %q outside the alphabet", input, code, r)
			}
		}
		again, err := NormalizeUserCode(FormatUserCode(code))
		if err != nil || again != code {
			t.Fatalf("normalising %q is not stable: %q, %v", code, again, err)
		}
	})
}
