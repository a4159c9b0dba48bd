package qr

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
)

const address = "https://tv.example/device?user_code=BCDF-GHJK"

func TestPNGSize(t *testing.T) {
	for _, size := range []int{MinPNGSize, 256, MaxPNGSize} {
		data, err := PNG(address, size)
		if err != nil {
			t.Fatalf("PNG at %d pixels: %v", size, err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("PNG at %d pixels does not decode: %v", size, err)
		}
		if b := img.Bounds(); b.Dx() != size || b.Dy() != size {
			t.Errorf("PNG is %dx%d, want %dx%d", b.Dx(), b.Dy(), size, size)
		}
	}
}

func TestPNGRejectsSizeOutOfRange(t *testing.T) {
	for _, size := range []int{0, MinPNGSize - 1, MaxPNGSize + 1} {
		if _, err := PNG(address, size); err == nil {
			t.Errorf("PNG at %d pixels: no error, want one", size)
		}
	}
}

func TestSVGIsPlainImage(t *testing.T) {
	data, err := SVG(address)
	if err != nil {
		t.Fatalf("SVG: %v", err)
	}
	svg := string(data)
	if !strings.HasPrefix(svg, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `) {
		t.Errorf("SVG does not start with a scalable svg element: %.80s", svg)
	}
	for _, banned := range []string{"<script", "href", "onload"} {
		if strings.Contains(svg, banned) {
			t.Errorf("SVG contains %q", banned)
		}
	}
}

func TestTerminalDrawsBothBackgrounds(t *testing.T) {
	dark, err := Terminal(address, true)
	if err != nil {
		t.Fatalf("Terminal: %v", err)
	}
	light, err := Terminal(address, false)
	if err != nil {
		t.Fatalf("Terminal: %v", err)
	}
	if dark == light {
		t.Error("the drawings for dark and light backgrounds are the same, want them inverted")
	}
	// The quiet zone is light, so on a dark background it is drawn in
	// blocks and on a light one in spaces.
	if !strings.HasPrefix(dark, "█") || !strings.HasPrefix(light, " ") {
		t.Errorf("quiet zone drawn as %q (dark) and %q (light), want a block and a space", dark[:3], light[:1])
	}
}
