package codes

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/nacl/box"
)

// A token response waits in KV between the issuer that minted it and the edge
// that hands it out. It is sealed to an X25519 key pair derived from the
// device code: the code record carries only the public key, so a reader of
// the bucket (an operator, a backup, a compromised worker) cannot use the
// token, and the issuer never needs to see the device code.

// ErrSealOpen is returned when a sealed token does not open with the key of
// the device code presented.
var ErrSealOpen = errors.New("codes: sealed token does not open with this device code")

func sealKeyPair(deviceCode string) (public, private *[32]byte, err error) {
	seed, err := hkdf.Key(sha256.New, []byte(deviceCode), nil, "deviceauth token seal", 32)
	if err != nil {
		return nil, nil, fmt.Errorf("codes: derive seal key: %w", err)
	}

	private = new([32]byte)
	copy(private[:], seed)
	public, err = x25519PublicKey(private)
	if err != nil {
		return nil, nil, fmt.Errorf("codes: derive seal key: %w", err)
	}
	return public, private, nil
}

// x25519PublicKey returns the X25519 public key of private, the Montgomery
// u-coordinate of the clamped scalar times the base point (RFC 7748
// section 6.1). It multiplies on the equivalent Edwards curve with
// precomputed tables of the base point and maps the result to Montgomery
// form (RFC 7748 section 4.1). The result is the same as
// curve25519.X25519(private, curve25519.Basepoint), which runs the generic
// Montgomery ladder and took a third of the edge's CPU time under a load
// of device authorizations.
func x25519PublicKey(private *[32]byte) (*[32]byte, error) {
	scalar, err := new(edwards25519.Scalar).SetBytesWithClamping(private[:])
	if err != nil {
		return nil, err
	}
	public := new([32]byte)
	copy(public[:], new(edwards25519.Point).ScalarBaseMult(scalar).BytesMontgomery())
	return public, nil
}

// SealKey returns the public key to store with a new device code.
func SealKey(deviceCode string) ([]byte, error) {
	public, _, err := sealKeyPair(deviceCode)
	if err != nil {
		return nil, err
	}
	return public[:], nil
}

// Seal encrypts plaintext to the public key from SealKey.
func Seal(sealKey, plaintext []byte) ([]byte, error) {
	if len(sealKey) != 32 {
		return nil, fmt.Errorf("codes: seal key has %d bytes, want 32", len(sealKey))
	}
	var public [32]byte
	copy(public[:], sealKey)
	sealed, err := box.SealAnonymous(nil, plaintext, &public, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("codes: seal: %w", err)
	}
	return sealed, nil
}

// Open decrypts what Seal encrypted for the key of deviceCode.
func Open(deviceCode string, sealed []byte) ([]byte, error) {
	public, private, err := sealKeyPair(deviceCode)
	if err != nil {
		return nil, err
	}
	plaintext, ok := box.OpenAnonymous(nil, sealed, public, private)
	if !ok {
		return nil, ErrSealOpen
	}
	return plaintext, nil
}
