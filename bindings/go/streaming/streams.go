package streaming

import (
	"context"
	"strconv"
	"strings"

	evroute "github.com/evroute/evroute/bindings/go"
)

const prefix = "/api/v1/streaming"

// ssePaths are Mastodon's SSE paths and their streams (only_media picks the
// :media twin of the public ones).
var ssePaths = map[string]string{
	prefix + "/user":              "user",
	prefix + "/user/notification": "user:notification",
	prefix + "/public":            "public",
	prefix + "/public/local":      "public:local",
	prefix + "/public/remote":     "public:remote",
	prefix + "/hashtag":           "hashtag",
	prefix + "/hashtag/local":     "hashtag:local",
	prefix + "/list":              "list",
	prefix + "/direct":            "direct",
}

var knownStreams = map[string]bool{
	"user": true, "user:notification": true, "public": true, "public:media": true,
	"public:local": true, "public:local:media": true, "public:remote": true,
	"public:remote:media": true, "hashtag": true, "hashtag:local": true, "list": true, "direct": true,
}

// userEventsWithoutNotifications are the events of timeline:<account>: a
// token without read or read:notifications gets the user stream without its
// notifications channel, as in Mastodon.
var userEventsWithoutNotifications = []string{
	"update", "delete", "status.update", "announcement", "announcement.reaction",
	"announcement.delete", "filters_changed", "conversation", "encrypted_message",
}

// isTruthy is Mastodon's isTruthy for query flags.
func isTruthy(v string) bool {
	switch v {
	case "", "false", "0", "f", "F", "FALSE", "off", "OFF":
		return false
	}
	return true
}

// streamRequest is a subscription as the client asked for it.
type streamRequest struct {
	Stream    string
	Tag       string
	List      string
	OnlyMedia bool
}

// resolved is a checked subscription: what the engine gets, and the key under
// which a repeated subscription is recognised.
type resolved struct {
	sub    evroute.Subscription
	hidden bool   // every side of it is disabled by the feed-access settings
	label  string // the stream name for metrics (the :media twin included)
	key    string
}

// resolve checks a subscription as Mastodon's channelNameToIds does, after
// the scopes: parameters, then list ownership.
func (h *Handler) resolve(ctx context.Context, id *Identity, req streamRequest) (*resolved, error) {
	if !knownStreams[req.Stream] {
		return nil, errUnknownStream
	}
	if err := checkScopes(id, req.Stream); err != nil {
		return nil, err
	}
	stream := req.Stream
	if req.OnlyMedia && (stream == "public" || stream == "public:local" || stream == "public:remote") {
		stream += ":media"
	}
	sub := evroute.Subscription{Stream: stream}
	key := stream
	origin, hidden := h.origin(id, stream)
	switch stream {
	case "hashtag", "hashtag:local":
		if req.Tag == "" {
			return nil, errMissingTag
		}
		sub.Tag = req.Tag
		key += ";" + strings.ToLower(req.Tag)
	case "list":
		if req.List == "" {
			return nil, errMissingList
		}
		if _, err := strconv.ParseInt(req.List, 10, 64); err != nil {
			return nil, errListNotOwned
		}
		owned, err := h.opts.Tokens.ListOwned(ctx, id.AccountID, req.List)
		if err != nil {
			h.log.Error("list lookup failed", "err", err)
			return nil, errUnexpected
		}
		if !owned {
			return nil, errListNotOwned
		}
		sub.List = req.List
		key += ";" + req.List
	case "user":
		if !hasScope(id, "read", "read:notifications") {
			sub.Events = userEventsWithoutNotifications
			key += ";nonotif"
		}
	}
	sub.Origin = origin
	return &resolved{sub: sub, hidden: hidden, label: stream, key: key}, nil
}
