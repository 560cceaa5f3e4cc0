package streaming

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"
)

// SystemBus carries Mastodon's system channels, timeline:access_token:<id>
// and timeline:system:<account> (without the Redis namespace). The handler
// calls Listen when a channel gets its first connection and Unlisten when it
// loses its last one; the host then delivers each message of a listened
// channel to Handler.SystemMessage.
type SystemBus interface {
	Listen(channel string)
	Unlisten(channel string)
}

type systemChannels struct {
	mu sync.Mutex
	m  map[string][]*conn // a token's or an account's connections: a few
}

func systemChannelsOf(id *Identity) [2]string {
	return [2]string{"timeline:access_token:" + id.TokenID, "timeline:system:" + id.AccountID}
}

func (h *Handler) listenSystem(c *conn) {
	s := &h.system
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range systemChannelsOf(c.id) {
		if len(s.m[ch]) == 0 && h.opts.System != nil {
			h.opts.System.Listen(ch)
		}
		s.m[ch] = append(s.m[ch], c)
	}
	h.metrics.channels.WithLabelValues(c.kind, "system").Add(2)
}

func (h *Handler) unlistenSystem(c *conn) {
	s := &h.system
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range systemChannelsOf(c.id) {
		conns := s.m[ch]
		if i := slices.Index(conns, c); i >= 0 {
			conns[i] = conns[len(conns)-1]
			conns[len(conns)-1] = nil
			conns = conns[:len(conns)-1]
		}
		s.m[ch] = conns
		if len(conns) == 0 {
			delete(s.m, ch)
			if h.opts.System != nil {
				h.opts.System.Unlisten(ch)
			}
		}
	}
	h.metrics.channels.WithLabelValues(c.kind, "system").Sub(2)
}

// SystemMessage handles a message of a system channel: `kill` ends every
// connection listening to it, `filters_changed` reloads the account's viewer
// state at once. Other events are ignored, as in Mastodon.
func (h *Handler) SystemMessage(channel string, message []byte) {
	var msg struct {
		Event string `json:"event"`
	}
	if json.Unmarshal(message, &msg) != nil {
		h.log.Warn("malformed system message", "channel", channel)
		return
	}
	switch msg.Event {
	case "kill":
		h.system.mu.Lock()
		for _, c := range h.system.m[channel] {
			c.stop(stopKill)
		}
		h.system.mu.Unlock()
	case "filters_changed":
		if acct, ok := strings.CutPrefix(channel, "timeline:system:"); ok {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := h.Reload(ctx, acct); err != nil {
					h.log.Error("filters_changed reload failed", "account", acct, "err", err)
				}
			}()
		}
	}
}
