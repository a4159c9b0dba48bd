package edge

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/oauth"
	"github.com/streamco/deviceauth/internal/ops"
)

// Paths of the public endpoints.
const (
	PathDeviceAuthorization = "/oauth/device_authorization"
	PathToken               = "/oauth/token"
	PathJWKS                = "/oauth/jwks.json"
	PathRevocation          = "/oauth/revoke"
	PathIntrospection       = "/oauth/introspect"
	PathMetadata            = "/.well-known/oauth-authorization-server"
	PathDevice              = "/device"
	PathSignIn              = "/device/signin"
	PathSignOut             = "/device/signout"
	PathConsent             = "/device/consent"
	PathDevices             = "/device/devices"
	PathRevokeDevice        = "/device/devices/revoke"
	PathQRPNG               = "/device/qr.png"
	PathQRSVG               = "/device/qr.svg"
	PathHealth              = ops.PathHealth
	PathReady               = ops.PathReady

	// The approval API of the service's phone app.
	PathAPI         = "/api/device"
	PathAPISignIn   = PathAPI + "/session"
	PathAPILookup   = PathAPI + "/lookup"
	PathAPIDecision = PathAPI + "/decision"
)

// Handler returns the edge's HTTP handler.
func (e *Edge) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(e.accessLog)

	// OAuth endpoints respond only in JSON, even to unknown methods.
	r.Group(func(r chi.Router) {
		r.MethodNotAllowed(e.oauthMethodNotAllowed)
		r.With(e.cors).Post(PathDeviceAuthorization, e.oauthHandler(e.deviceAuthorization))
		r.With(e.cors).Post(PathToken, e.oauthHandler(e.token))
		r.With(e.cors).Options(PathDeviceAuthorization, func(http.ResponseWriter, *http.Request) {})
		r.With(e.cors).Options(PathToken, func(http.ResponseWriter, *http.Request) {})
		r.Post(PathRevocation, e.oauthHandler(e.revoke))
		r.Post(PathIntrospection, e.oauthHandler(e.introspect))
		r.With(middleware.GetHead).Get(PathMetadata, e.metadata)
		r.With(middleware.GetHead).Get(PathJWKS, e.jwks)
	})

	r.Route(PathAPI, func(r chi.Router) {
		r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", http.MethodPost)
			oauth.WriteError(w, oauth.ErrInvalidRequest.WithDescription("Use POST.").WithStatus(http.StatusMethodNotAllowed))
		})
		r.NotFound(func(w http.ResponseWriter, req *http.Request) {
			oauth.WriteError(w, oauth.ErrInvalidRequest.WithDescription("No endpoint at %s.", req.URL.Path).WithStatus(http.StatusNotFound))
		})
		r.Post(PathAPISignIn[len(PathAPI):], e.oauthHandler(e.apiSignIn))
		r.Post(PathAPILookup[len(PathAPI):], e.oauthHandler(e.apiLookup))
		r.Post(PathAPIDecision[len(PathAPI):], e.oauthHandler(e.apiDecision))
	})

	r.Get(PathDevice, e.pageHandler(e.enterCodePage))
	r.Post(PathDevice, e.pageHandler(e.submitCode))
	r.Get(PathConsent, e.pageHandler(e.consentPage))
	r.Post(PathConsent, e.pageHandler(e.submitDecision))
	r.Post(PathSignIn, e.pageHandler(e.signIn))
	r.Post(PathSignOut, e.pageHandler(e.signOut))
	r.Get(PathDevices, e.pageHandler(e.devicesPage))
	r.Post(PathRevokeDevice, e.pageHandler(e.revokeDevice))
	r.Get(PathQRPNG, e.qrPNG)
	r.Get(PathQRSVG, e.qrSVG)
	r.Get("/static/*", e.static)
	// Load balancers probe the port they send traffic to, so the health
	// endpoints are served here as well as on the debug listener.
	health := http.NewServeMux()
	ops.Health(health, e.Ready, e.log)
	r.Handle(PathHealth, health)
	r.Handle(PathReady, health)

	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/oauth/") || strings.HasPrefix(req.URL.Path, "/.well-known/") {
			oauth.WriteError(w, oauth.ErrInvalidRequest.WithDescription("No endpoint at %s.", req.URL.Path).WithStatus(http.StatusNotFound))
			return
		}
		pageHeaders(w)
		http.NotFound(w, req)
	})
	return r
}

func (e *Edge) oauthMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	allow := http.MethodPost
	if r.URL.Path == PathMetadata || r.URL.Path == PathJWKS {
		allow = "GET, HEAD"
	}
	w.Header().Set("Allow", allow)
	oauth.WriteError(w, oauth.ErrInvalidRequest.WithDescription("Method %s is not allowed; use %s.", r.Method, allow).WithStatus(http.StatusMethodNotAllowed))
}

// oauthHandler adapts a handler that returns an error: the error is logged
// with its cause at the level its kind deserves and rendered by
// oauth.WriteError.
func (e *Edge) oauthHandler(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}

		if r.Context().Err() != nil {
			// The client went away; nothing can be written and nothing
			// failed on our side.
			zerolog.Ctx(r.Context()).Debug().Err(err).Msg("request cancelled by the client")
			return
		}
		writeOAuthError(w, zerolog.Ctx(r.Context()), err)
	}
}

// writeOAuthError logs err with its cause at the level its kind deserves
// and renders it with oauth.WriteError.
func writeOAuthError(w http.ResponseWriter, log *zerolog.Logger, err error) {
	oe := oauth.AsError(err)
	if oe.Status >= 500 {
		log.Error().Err(err).Str("error_code", oe.Code).Msg("request failed")
	} else {
		log.Debug().Err(err).Str("error_code", oe.Code).Msg("request rejected")
	}
	oauth.WriteError(w, oe)
}

// accessLog writes one record per request and gives the handler a child
// logger with the request id. It logs the path without the query, which can
// carry a user code.
func (e *Edge) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		log := e.log.With().Str("request_id", requestID()).Str("method", r.Method).Str("path", r.URL.Path).Logger()
		r = r.WithContext(log.WithContext(r.Context()))

		next.ServeHTTP(ww, r)

		log.Debug().Int("status", ww.Status()).Int("bytes", ww.BytesWritten()).
			Dur("duration", time.Since(start)).Msg("request")
	})
}
