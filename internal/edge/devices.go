package edge

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// nextDevices is the sign-in form's "next" value that returns to the
// devices page.
const nextDevices = "devices"

// deviceView is one authorised device on the devices page.
type deviceView struct {
	GrantID    string
	ClientName string
	DeviceKind string
	CreatedAt  time.Time
	LastUsedAt time.Time
	Scopes     []string
}

// validGrantID reports whether id can be a grant id. It keeps a form value
// from adding tokens or wildcards to a KV key.
func validGrantID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// activeGrants returns the grants of an account that are not revoked,
// newest first.
func (e *Edge) activeGrants(r *http.Request, accountID string) ([]events.Grant, error) {
	keys, err := e.grants.Keys(r.Context(), events.GrantKey(accountID, ">"))
	if err != nil {
		return nil, err
	}
	var grants []events.Grant
	for _, key := range keys {
		grant, _, err := e.grants.Get(r.Context(), key)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if grant.RevokedAt.IsZero() {
			grants = append(grants, grant)
		}
	}
	slices.SortFunc(grants, func(a, b events.Grant) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return grants, nil
}

// devicesPage lists the devices the signed-in person has authorised.
func (e *Edge) devicesPage(w http.ResponseWriter, r *http.Request) error {
	data := pageData{CSRFToken: e.csrfToken(w, r)}
	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn {
		data.Title = "title.sign_in"
		data.Next = nextDevices
		e.render(w, r, http.StatusOK, "signin", data)
		return nil
	}

	grants, err := e.activeGrants(r, session.AccountID)
	if err != nil {
		return err
	}
	for _, g := range grants {
		client, _ := e.clients.Lookup(g.ClientID)
		data.Devices = append(data.Devices, deviceView{
			GrantID:    g.ID,
			ClientName: clientName(client, g.ClientID),
			DeviceKind: g.DeviceKind,
			CreatedAt:  g.CreatedAt,
			LastUsedAt: g.LastUsedAt,
			Scopes:     g.Scopes,
		})
	}

	// After a removal the page names what was removed. The grant is read
	// under the session's account, so the parameter cannot name anyone
	// else's device.
	if removed := r.URL.Query().Get("removed"); validGrantID(removed) {
		grant, _, err := e.grants.Get(r.Context(), events.GrantKey(session.AccountID, removed))
		if err == nil && !grant.RevokedAt.IsZero() {
			client, _ := e.clients.Lookup(grant.ClientID)
			data.Notice = e.localizer(r).T("devices.removed", clientName(client, grant.ClientID))
		}
	}

	data.Title = "title.devices"
	data.Username = session.Username
	e.render(w, r, http.StatusOK, "devices", data)
	return nil
}

// revokeDevice revokes one of the signed-in person's grants and returns to
// the devices page.
func (e *Edge) revokeDevice(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn || !e.validCSRF(r) {
		http.Redirect(w, r, PathDevices, http.StatusSeeOther)
		return nil
	}
	grantID := r.PostFormValue("grant_id")
	if !validGrantID(grantID) {
		http.Redirect(w, r, PathDevices, http.StatusSeeOther)
		return nil
	}

	revoked, err := e.revokeGrant(r, session.AccountID, grantID, events.RevokeReasonUser)
	if err != nil {
		return err
	}
	if !revoked {
		http.Redirect(w, r, PathDevices, http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, PathDevices+"?removed="+url.QueryEscape(grantID), http.StatusSeeOther)
	return nil
}

// revokeGrant revokes a grant of accountID through the shared revocation
// path. It returns false when the account has no such grant.
func (e *Edge) revokeGrant(r *http.Request, accountID, grantID, reason string) (bool, error) {
	found, err := e.revoker.Revoke(r.Context(), accountID, grantID, reason)
	if err != nil || !found {
		return found, err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", accountID).Str("grant_id", grantID).
		Str("reason", reason).Msg("grant revoked")
	return true, nil
}
