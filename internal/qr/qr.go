// Package qr draws QR codes of verification addresses: as PNG and SVG for
// the edge to serve, and as text for a terminal. It wraps
// github.com/skip2/go-qrcode and fixes the choices every caller shares.
package qr

import (
	"fmt"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// level is the error correction level. Medium (about 15% of the symbol may
// be damaged) keeps a short address at a low version, so its modules stay
// large enough to scan from a couch across a room.
const level = qrcode.Medium

// MinPNGSize and MaxPNGSize bound the side of a PNG in pixels.
const (
	MinPNGSize = 64
	MaxPNGSize = 1024
)

// PNG returns a square PNG image of content, size pixels wide, black on
// white with the standard four-module quiet zone.
func PNG(content string, size int) ([]byte, error) {
	if size < MinPNGSize || size > MaxPNGSize {
		return nil, fmt.Errorf("qr: size %d is outside %d to %d pixels", size, MinPNGSize, MaxPNGSize)
	}
	code, err := qrcode.New(content, level)
	if err != nil {
		return nil, fmt.Errorf("qr: encode: %w", err)
	}
	png, err := code.PNG(size)
	if err != nil {
		return nil, fmt.Errorf("qr: draw PNG: %w", err)
	}
	return png, nil
}

// SVG returns an SVG image of content that scales to any size: one unit per
// module, including the quiet zone, with every dark module in one path.
func SVG(content string) ([]byte, error) {
	code, err := qrcode.New(content, level)
	if err != nil {
		return nil, fmt.Errorf("qr: encode: %w", err)
	}
	modules := code.Bitmap()
	n := len(modules)

	// Each run of dark modules in a row is one rectangle, which keeps the
	// path several times shorter than one square per module.
	var path strings.Builder
	for y, row := range modules {
		for x := 0; x < len(row); {
			if !row[x] {
				x++
				continue
			}
			start := x
			for x < len(row) && row[x] {
				x++
			}
			fmt.Fprintf(&path, "M%d %dh%dv1h-%dz", start, y, x-start, x-start)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img">`, n, n)
	b.WriteString(`<title>QR code</title>`)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`, n, n)
	fmt.Fprintf(&b, `<path fill="#000" d="%s"/>`, path.String())
	b.WriteString("</svg>\n")
	return []byte(b.String()), nil
}

// Terminal returns content as a QR code drawn with Unicode half blocks, two
// modules per character cell. The blocks take the terminal's foreground
// colour: with darkBackground they draw the light modules, which suits light
// text on a dark background, and otherwise the dark ones. It needs a font
// whose block characters fill the cell, as most terminal fonts do.
func Terminal(content string, darkBackground bool) (string, error) {
	code, err := qrcode.New(content, level)
	if err != nil {
		return "", fmt.Errorf("qr: encode: %w", err)
	}
	return code.ToSmallString(!darkBackground), nil
}
