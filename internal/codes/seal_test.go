package codes

import (
	"bytes"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// TestX25519PublicKeyMatchesLadder checks the Edwards-form base point
// multiplication against the X25519 function of RFC 7748 on random keys
// and on keys whose clamping changes many bits.
func TestX25519PublicKeyMatchesLadder(t *testing.T) {
	keys := [][32]byte{{}, {0: 0xff, 31: 0xff}, {0: 7, 31: 0x80}}
	for range 500 {
		var k [32]byte
		_, _ = rand.Read(k[:])
		keys = append(keys, k)
	}

	for _, private := range keys {
		got, err := x25519PublicKey(&private)
		if err != nil {
			t.Fatalf("x25519PublicKey(%x): %v", private, err)
		}
		want, err := curve25519.X25519(private[:], curve25519.Basepoint)
		if err != nil {
			t.Fatalf("curve25519.X25519(%x): %v", private, err)
		}
		if !bytes.Equal(got[:], want) {
			t.Fatalf("public key of %x = %x, want %x", private, got, want)
		}
	}
}

// TestX25519PublicKeyVector checks the key pair of Alice in RFC 7748
// section 6.1.
func TestX25519PublicKeyVector(t *testing.T) {
	private := [32]byte{
		0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
		0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
	}
	want := []byte{
		0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
		0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
	}
	got, err := x25519PublicKey(&private)
	if err != nil {
		t.Fatalf("x25519PublicKey: %v", err)
	}
	if !bytes.Equal(got[:], want) {
		t.Errorf("public key = %x, want %x", got, want)
	}
}

func BenchmarkSealKey(b *testing.B) {
	code, err := NewDeviceCode(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := SealKey(code); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkX25519Ladder(b *testing.B) {
	private := make([]byte, 32)
	_, _ = rand.Read(private)
	for b.Loop() {
		if _, err := curve25519.X25519(private, curve25519.Basepoint); err != nil {
			b.Fatal(err)
		}
	}
}
