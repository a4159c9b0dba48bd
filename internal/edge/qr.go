package edge

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/qr"
)

// defaultQRSize is the side in pixels of a PNG when the request sets none.
const defaultQRSize = 256

// verificationURIComplete returns the verification address with the user
// code filled in (RFC 8628 section 3.3.1), the content of the QR code.
func (e *Edge) verificationURIComplete(userCode string) string {
	return e.url(PathDevice) + "?user_code=" + url.QueryEscape(codes.FormatUserCode(userCode))
}

// qrRequest is a parsed request for a QR code image.
type qrRequest struct {
	userCode string
	size     int
}

// parseQRRequest reads user_code, and for a PNG the optional size in pixels.
// The user code is the only key: it is already in verification_uri_complete,
// which the TV shows anyway, while the device code must never leave the
// device.
func parseQRRequest(r *http.Request) (qrRequest, string) {
	query := r.URL.Query()
	userCode, err := codes.NormalizeUserCode(query.Get("user_code"))
	if err != nil {
		return qrRequest{}, "user_code is missing or is not a user code such as BCDF-GHJK."
	}
	req := qrRequest{userCode: userCode, size: defaultQRSize}
	if raw := query.Get("size"); raw != "" {
		size, err := strconv.Atoi(raw)
		if err != nil || size < qr.MinPNGSize || size > qr.MaxPNGSize {
			return qrRequest{}, "size must be a whole number of pixels from " + strconv.Itoa(qr.MinPNGSize) + " to " + strconv.Itoa(qr.MaxPNGSize) + "."
		}
		req.size = size
	}
	return req, ""
}

// qrPNG serves the QR code of verification_uri_complete as a PNG. It draws
// any well-formed user code without reading storage, so it reveals nothing
// about which codes exist.
func (e *Edge) qrPNG(w http.ResponseWriter, r *http.Request) {
	req, problem := parseQRRequest(r)
	if problem != "" {
		writeImageError(w, problem)
		return
	}
	png, err := qr.PNG(e.verificationURIComplete(req.userCode), req.size)
	if err != nil {
		zerolog.Ctx(r.Context()).Error().Err(err).Msg("drawing a QR code failed")
		http.Error(w, "The QR code could not be drawn.", http.StatusInternalServerError)
		return
	}
	writeImage(w, "image/png", png)
}

// qrSVG serves the QR code of verification_uri_complete as an SVG image.
func (e *Edge) qrSVG(w http.ResponseWriter, r *http.Request) {
	req, problem := parseQRRequest(r)
	if problem != "" {
		writeImageError(w, problem)
		return
	}
	svg, err := qr.SVG(e.verificationURIComplete(req.userCode))
	if err != nil {
		zerolog.Ctx(r.Context()).Error().Err(err).Msg("drawing a QR code failed")
		http.Error(w, "The QR code could not be drawn.", http.StatusInternalServerError)
		return
	}
	writeImage(w, "image/svg+xml", svg)
}

// writeImage sends a QR code image. It shows a live code, so it is not
// cached. TV apps on other origins may embed it, and the policy keeps an
// SVG opened on its own from running anything.
func writeImage(w http.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func writeImageError(w http.ResponseWriter, message string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.Error(w, message, http.StatusBadRequest)
}
