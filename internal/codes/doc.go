// Package codes generates device codes and user codes, normalises user codes
// as people type them, derives the keyed hashes under which both are stored,
// and seals token responses so that only the holder of a device code can
// open them.
//
// Nothing here talks to NATS or HTTP.
package codes
