// Package keyfile reads the shared hash key from a file: 32 or more random
// bytes, hex-encoded.
package keyfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Read returns the key stored hex-encoded in path.
func Read(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyfile: read %s: %w", path, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("keyfile: %s must hold hex digits (create one with: openssl rand -hex 32): %w", path, err)
	}
	return key, nil
}

// LoadOrCreate reads the key in path, first writing a new random 32-byte key
// there if the file does not exist.
func LoadOrCreate(path string) ([]byte, error) {
	key, err := Read(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}

	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("keyfile: write %s: %w", path, err)
	}
	return key, nil
}
