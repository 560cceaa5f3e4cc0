package streaming

import (
	"context"
	"time"
)

// FeedAccess is Mastodon's feed-access settings (local_live_feed_access and
// friends set to "disabled"): a disabled side is hidden from the public
// (live) or hashtag (topic) streams; the subscription is not refused.
type FeedAccess struct {
	LocalLiveDisabled, RemoteLiveDisabled   bool
	LocalTopicDisabled, RemoteTopicDisabled bool
}

// FeedAccessStore is optional: when the ViewerStore also implements it, the
// settings are read at start and with every refresh. New subscriptions follow
// the settings read last.
type FeedAccessStore interface {
	FeedAccess(ctx context.Context) (FeedAccess, error)
}

// permViewFeeds is the role permission that bypasses the feed-access settings.
const permViewFeeds = 0x100000

func (h *Handler) loadFeedAccess(ctx context.Context) {
	fs, ok := h.opts.Viewers.(FeedAccessStore)
	if !ok {
		return
	}
	fa, err := fs.FeedAccess(ctx)
	if err != nil {
		h.log.Error("feed access settings not loaded", "err", err)
		return
	}
	h.feed.Store(&fa)
}

func (h *Handler) loadFeedAccessNow() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.loadFeedAccess(ctx)
}

// origin applies the settings to a public or hashtag stream: "" (all), "local"
// or "remote", or hidden when every side it shows is disabled.
func (h *Handler) origin(id *Identity, stream string) (origin string, hidden bool) {
	fa := h.feed.Load()
	if fa == nil || id.Permissions&permViewFeeds != 0 {
		return "", false
	}
	local, remote := fa.LocalLiveDisabled, fa.RemoteLiveDisabled
	switch stream {
	case "hashtag", "hashtag:local":
		local, remote = fa.LocalTopicDisabled, fa.RemoteTopicDisabled
	}
	switch stream {
	case "public", "public:media", "hashtag":
		switch {
		case local && remote:
			return "", true
		case local:
			return "remote", false
		case remote:
			return "local", false
		}
	case "public:local", "public:local:media", "hashtag:local":
		return "", local
	case "public:remote", "public:remote:media":
		return "", remote
	}
	return "", false
}
