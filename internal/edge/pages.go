package edge

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// pages holds one template set per page, each with the shared layout.
type pages struct {
	byName map[string]*template.Template
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: make(map[string]*template.Template)}
	for _, name := range names {
		if name == "templates/layout.html" {
			continue
		}
		t, err := template.ParseFS(templateFiles, "templates/layout.html", name)
		if err != nil {
			return nil, fmt.Errorf("edge: parse %s: %w", name, err)
		}
		p.byName[name[len("templates/"):len(name)-len(".html")]] = t
	}
	return p, nil
}

// pageData is the input of every page template. Title and Error are
// message keys, translated by L.
type pageData struct {
	L         localizer
	Title     string
	CSRFToken string
	Error     string
	// UserCode is the code in its XXXX-XXXX form.
	UserCode string
	// Confirmation is the browser's proof that it confirmed UserCode,
	// carried by the sign-in and consent forms.
	Confirmation string
	Username     string
	// Next is the page the sign-in form returns to: "" for the code's
	// consent page, "devices" for the devices page. It is one of these
	// fixed names, never an address, so no form can steer a redirect.
	Next string

	ClientName    string
	DeviceKind    string
	Scopes        []string
	RequestedAt   time.Time
	RequestedAgo  time.Duration
	RequestedFrom string

	// Outcome chooses the text of the result page: approved, denied,
	// expired, unknown, disabled, limited or error.
	Outcome string
	// RetryAfter is how long a limited person must wait.
	RetryAfter time.Duration

	Devices []deviceView
	// Notice is a confirmation shown at the top of the devices page.
	Notice string
}

// pageHeaders are set on every page: no framing (clickjacking), no scripts
// or third-party content, no caching of pages that show codes, and no
// referrer that could carry a user code elsewhere.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// render writes a page. It renders into a buffer first so a template error
// becomes a clean 500 rather than half a page.
func (e *Edge) render(w http.ResponseWriter, r *http.Request, status int, name string, data pageData) {
	t, ok := e.pages.byName[name]
	if !ok {
		zerolog.Ctx(r.Context()).Error().Str("page", name).Msg("no such page template")
		http.Error(w, "Something went wrong. Try again.", http.StatusInternalServerError)
		return
	}
	data.L = e.localizer(r)
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		zerolog.Ctx(r.Context()).Error().Err(err).Str("page", name).Msg("rendering page failed")
		http.Error(w, "Something went wrong. Try again.", http.StatusInternalServerError)
		return
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", data.L.Lang())
	w.Header().Set("Vary", "Accept-Language, Cookie")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// pageHandler adapts a page handler that returns an error: any error it
// returns is a server fault, logged and shown as a plain error page.
func (e *Edge) pageHandler(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if r.Context().Err() != nil {
				return
			}
			zerolog.Ctx(r.Context()).Error().Err(err).Msg("page request failed")
			e.render(w, r, http.StatusInternalServerError, "result", pageData{
				Title:   "title.error",
				Outcome: "error",
			})
		}
	}
}

func (e *Edge) static(w http.ResponseWriter, r *http.Request) {
	sub, _ := fs.Sub(staticFiles, "static")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.StripPrefix("/static/", http.FileServerFS(sub)).ServeHTTP(w, r)
}
