package streaming

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// Identity is what a token resolves to (Mastodon's accountFromToken).
type Identity struct {
	TokenID     string   // oauth_access_tokens.id: the timeline:access_token:<id> system channel
	AccountID   string   // the viewer; the timeline:system:<id> system channel
	Scopes      []string // OAuth scopes of the token
	Permissions int64    // the user role's permission bits (feed-access bypass: 0x100000)
}

// ErrInvalidToken is returned by a TokenStore for an unknown or revoked token,
// a disabled user or a suspended account.
var ErrInvalidToken = errors.New("invalid access token")

// TokenStore resolves access tokens and list ownership. Any error other than
// ErrInvalidToken is answered 500 "An unexpected error occurred".
type TokenStore interface {
	Authenticate(ctx context.Context, token string) (*Identity, error)
	// ListOwned reports whether list belongs to account.
	ListOwned(ctx context.Context, accountID, listID string) (bool, error)
}

// httpError is an answer to a refused request or subscription: the status and
// Mastodon's message.
type httpError struct {
	status  int
	message string
}

func (e *httpError) Error() string { return e.message }

var (
	errUnknownChannel = &httpError{http.StatusBadRequest, "Unknown channel requested"}
	errMissingToken   = &httpError{http.StatusUnauthorized, "Missing access token"}
	errInvalidToken   = &httpError{http.StatusUnauthorized, "Invalid access token"}
	errScopes         = &httpError{http.StatusUnauthorized, "Access token does not have the required scopes"}
	errMissingTag     = &httpError{http.StatusBadRequest, "Missing tag name parameter"}
	errMissingList    = &httpError{http.StatusBadRequest, "Missing list name parameter"}
	errListNotOwned   = &httpError{http.StatusUnauthorized, "Not authorized to stream this list"}
	errUnknownStream  = &httpError{http.StatusBadRequest, "Unknown stream type"}
	errUnexpected     = &httpError{http.StatusInternalServerError, "An unexpected error occurred"}
)

// tokenFrom takes the token as Mastodon does: the Authorization header
// (with "Bearer " stripped when present), else access_token in the query, else
// the Sec-WebSocket-Protocol header. fromProtocol says the last one was used,
// so the upgrade echoes it as the chosen subprotocol.
func tokenFrom(r *http.Request) (token string, fromProtocol bool) {
	if a := r.Header.Get("Authorization"); a != "" {
		return strings.TrimPrefix(a, "Bearer "), false
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, false
	}
	if p := r.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		return p, true
	}
	return "", false
}

func hasScope(id *Identity, wanted ...string) bool {
	for _, s := range id.Scopes {
		for _, w := range wanted {
			if s == w {
				return true
			}
		}
	}
	return false
}

// checkScopes: every stream needs read or read:statuses, except
// user:notification, which needs read or read:notifications.
func checkScopes(id *Identity, stream string) error {
	need := "read:statuses"
	if stream == "user:notification" {
		need = "read:notifications"
	}
	if !hasScope(id, "read", need) {
		return errScopes
	}
	return nil
}

// authenticate resolves the request's token into an Identity.
func (h *Handler) authenticate(r *http.Request) (*Identity, error) {
	token, _ := tokenFrom(r)
	if token == "" {
		return nil, errMissingToken
	}
	id, err := h.opts.Tokens.Authenticate(r.Context(), token)
	switch {
	case errors.Is(err, ErrInvalidToken):
		return nil, errInvalidToken
	case err != nil:
		h.log.Error("token lookup failed", "err", err)
		return nil, errUnexpected
	}
	return id, nil
}
