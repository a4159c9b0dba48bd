package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
)

// Supported signing algorithms.
const (
	AlgorithmRS256 = "RS256"
	AlgorithmES256 = "ES256"
)

// signingKey is a private key and the id it is published under.
type signingKey struct {
	id        string
	algorithm string
	private   crypto.Signer
}

func (k signingKey) method() jwt.SigningMethod {
	if k.algorithm == AlgorithmES256 {
		return jwt.SigningMethodES256
	}
	return jwt.SigningMethodRS256
}

// loadKeys reads every "*.pem" private key in dir and, when none exists for
// algorithm, generates one and writes it there. The newest key, by the time
// in its file name, signs; the others stay published so that tokens they
// signed keep verifying.
func loadKeys(dir, algorithm string, now time.Time) (active signingKey, all []signingKey, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return signingKey{}, nil, fmt.Errorf("issuer: create key directory: %w", err)
	}

	names, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return signingKey{}, nil, fmt.Errorf("issuer: list keys: %w", err)
	}
	slices.Sort(names)
	for _, name := range names {
		key, err := readKey(name)
		if err != nil {
			return signingKey{}, nil, err
		}
		all = append(all, key)
	}

	var candidates []signingKey
	for _, k := range all {
		if k.algorithm == algorithm {
			candidates = append(candidates, k)
		}
	}
	if len(candidates) == 0 {
		key, err := generateKey(dir, algorithm, now)
		if err != nil {
			return signingKey{}, nil, err
		}
		all = append(all, key)
		candidates = append(candidates, key)
	}
	return candidates[len(candidates)-1], all, nil
}

func readKey(path string) (signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return signingKey{}, fmt.Errorf("issuer: %s is not a PEM \"PRIVATE KEY\" (PKCS #8)", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: parse %s: %w", path, err)
	}

	id := strings.TrimSuffix(filepath.Base(path), ".pem")
	switch k := parsed.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return signingKey{}, fmt.Errorf("issuer: %s: RSA key has %d bits, want at least 2048", path, k.N.BitLen())
		}
		return signingKey{id: id, algorithm: AlgorithmRS256, private: k}, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return signingKey{}, fmt.Errorf("issuer: %s: EC key is not on P-256", path)
		}
		return signingKey{id: id, algorithm: AlgorithmES256, private: k}, nil
	default:
		return signingKey{}, fmt.Errorf("issuer: %s: unsupported key type %T", path, parsed)
	}
}

func generateKey(dir, algorithm string, now time.Time) (signingKey, error) {
	var private crypto.Signer
	var err error
	switch algorithm {
	case AlgorithmRS256:
		private, err = rsa.GenerateKey(rand.Reader, 2048)
	case AlgorithmES256:
		private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return signingKey{}, fmt.Errorf("issuer: unsupported signing algorithm %q (want %s or %s)", algorithm, AlgorithmRS256, AlgorithmES256)
	}
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: generate key: %w", err)
	}

	der, err := x509.MarshalPKCS8PrivateKey(private)
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: encode key: %w", err)
	}
	// The time prefix orders keys by age; the random suffix keeps two
	// issuers that generate at the same second apart.
	id := now.UTC().Format("20060102T150405Z") + "-" + strings.ToLower(rand.Text()[:8])
	path := filepath.Join(dir, id+".pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return signingKey{}, fmt.Errorf("issuer: write key: %w", err)
	}
	return signingKey{id: id, algorithm: algorithm, private: private}, nil
}

// publicJWK returns the JWK of k's public half.
func publicJWK(k signingKey) (events.JWK, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := events.JWK{KeyID: k.id, Use: "sig", Algorithm: k.algorithm}
	switch pub := k.private.Public().(type) {
	case *rsa.PublicKey:
		jwk.KeyType = "RSA"
		jwk.N = b64(pub.N.Bytes())
		jwk.E = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		ecdh, err := pub.ECDH()
		if err != nil {
			return events.JWK{}, fmt.Errorf("issuer: encode EC key: %w", err)
		}
		// An uncompressed point is 0x04 || X || Y, 32 bytes each on P-256.
		point := ecdh.Bytes()
		jwk.KeyType = "EC"
		jwk.Curve = "P-256"
		jwk.X = b64(point[1:33])
		jwk.Y = b64(point[33:65])
	default:
		return events.JWK{}, errors.New("issuer: unsupported public key type")
	}
	return jwk, nil
}
