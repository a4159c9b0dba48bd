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
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
)

// Supported signing algorithms.
const (
	AlgorithmRS256 = "RS256"
	AlgorithmES256 = "ES256"
)

// keyTimeLayout is the time prefix of generated key ids.
const keyTimeLayout = "20060102T150405Z"

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

// keyRing is the issuer's signing keys: every key in its key directory, and
// the active one, the newest for the configured algorithm.
type keyRing struct {
	dir       string
	algorithm string

	mu  sync.RWMutex
	all []signingKey
	cur signingKey
}

// loadKeyRing reads every "*.pem" private key in dir and, when none exists
// for algorithm, generates one and writes it there. Keys sort by file name,
// and generated names start with their creation time, so the newest key for
// algorithm signs and the older ones stay published until the tokens they
// signed have expired.
func loadKeyRing(dir, algorithm string, now time.Time) (*keyRing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("issuer: create key directory: %w", err)
	}

	names, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return nil, fmt.Errorf("issuer: list keys: %w", err)
	}
	slices.Sort(names)
	ring := &keyRing{dir: dir, algorithm: algorithm}
	for _, name := range names {
		key, err := readKey(name)
		if err != nil {
			return nil, err
		}
		ring.all = append(ring.all, key)
		if key.algorithm == algorithm {
			ring.cur = key
		}
	}
	if ring.cur.id == "" {
		if _, err := ring.rotate(now); err != nil {
			return nil, err
		}
	}
	return ring, nil
}

// active returns the key that signs new tokens.
func (r *keyRing) active() signingKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

// keys returns every loaded key, oldest first.
func (r *keyRing) keys() []signingKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.all)
}

// rotate generates a new key, writes it to the key directory and makes it
// the active key.
func (r *keyRing) rotate(now time.Time) (signingKey, error) {
	key, err := generateKey(r.dir, r.algorithm, now)
	if err != nil {
		return signingKey{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, key)
	r.cur = key
	return key, nil
}

// retiredAt returns when key stopped signing: the creation time of the next
// key of the ring, read from its generated name. It reports false for the
// active key and for keys whose successor's name carries no time.
func (r *keyRing) retiredAt(key signingKey) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if key.id == r.cur.id {
		return time.Time{}, false
	}
	i := slices.IndexFunc(r.all, func(k signingKey) bool { return k.id == key.id })
	if i < 0 || i+1 >= len(r.all) {
		return time.Time{}, false
	}
	created, err := time.Parse(keyTimeLayout, strings.SplitN(r.all[i+1].id, "-", 2)[0])
	if err != nil {
		return time.Time{}, false
	}
	return created, true
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
	id := now.UTC().Format(keyTimeLayout) + "-" + strings.ToLower(rand.Text()[:8])
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
