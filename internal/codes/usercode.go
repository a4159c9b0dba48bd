package codes

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
)

// UserCodeAlphabet has no vowels, so a code never spells a word, and none of
// the look-alike pairs 0/O, 1/I/L, 5/S, 2/Z, 8/B. It is the alphabet that
// RFC 8628 section 6.1 suggests, less S and Z.
const UserCodeAlphabet = "BCDFGHJKLMNPQRTVWX"

// UserCodeLength is the number of characters in a user code. 18^8 is about
// 1.1e10 codes: with 100,000 live codes, one random guess hits one of them
// with a probability of about 1e-5.
//
// NOTE: that bound needs the number of guesses limited per address and per
// session; until the edge enforces such limits, nothing caps the guesses.
const UserCodeLength = 8

// ErrInvalidUserCode is returned by NormalizeUserCode for input that cannot
// be a user code.
var ErrInvalidUserCode = errors.New("codes: not a user code")

// NewUserCode returns a random user code in its canonical form: eight
// characters of UserCodeAlphabet without a separator.
func NewUserCode(random io.Reader) (string, error) {
	if random == nil {
		random = rand.Reader
	}

	// Rejection sampling keeps every character equally likely: 252 is the
	// largest multiple of 18 that fits in a byte.
	const limit = 256 - 256%len(UserCodeAlphabet)
	code := make([]byte, 0, UserCodeLength)
	buf := make([]byte, 16)
	for len(code) < UserCodeLength {
		if _, err := io.ReadFull(random, buf); err != nil {
			return "", fmt.Errorf("codes: read random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit || len(code) == UserCodeLength {
				continue
			}
			code = append(code, UserCodeAlphabet[int(b)%len(UserCodeAlphabet)])
		}
	}
	return string(code), nil
}

// FormatUserCode returns a canonical user code the way people see it,
// XXXX-XXXX.
func FormatUserCode(code string) string {
	if len(code) != UserCodeLength {
		return code
	}
	return code[:4] + "-" + code[4:]
}

// NormalizeUserCode returns the canonical form of a user code as a person
// typed it: any case, with or without the dash, with spaces anywhere.
func NormalizeUserCode(input string) (string, error) {
	if len(input) > 64 {
		return "", ErrInvalidUserCode
	}

	var b strings.Builder
	for _, r := range input {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		if r > 127 || !strings.ContainsRune(UserCodeAlphabet, r) {
			return "", ErrInvalidUserCode
		}
		b.WriteRune(r)
	}

	if b.Len() != UserCodeLength {
		return "", ErrInvalidUserCode
	}
	return b.String(), nil
}
