package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/evroute/evroute/bindings/go/streaming"
)

// systemBus carries Mastodon's system channels (kill, filters_changed) over
// the engine's own Redis node: the node subscribes them next to the stream
// channels (again after a reconnect), keeps no presence key for them, and
// queues their messages for run. The handler calls Listen and Unlisten under
// its lock; they only update the node's reference counts.
type systemBus struct {
	node *evroute.RedisNode
	log  *slog.Logger
}

func (b *systemBus) Listen(channel string) {
	if err := b.node.ListenSystem(channel); err != nil {
		b.log.Error("cannot listen to a system channel", "channel", channel, "err", err)
	}
}

func (b *systemBus) Unlisten(channel string) {
	if _, err := b.node.UnlistenSystem(channel); err != nil {
		b.log.Error("cannot stop listening to a system channel", "channel", channel, "err", err)
	}
}

// run hands every system message to the handler until ctx ends or the node
// stops. NextSystem holds this goroutine's thread while it waits.
func (b *systemBus) run(ctx context.Context, h *streaming.Handler) {
	for ctx.Err() == nil {
		msg, err := b.node.NextSystem(time.Second)
		if errors.Is(err, evroute.ErrClosed) {
			return
		}
		if err != nil {
			b.log.Error("reading system messages", "err", err)
			time.Sleep(time.Second)
			continue
		}
		if msg != nil {
			h.SystemMessage(msg.Channel, msg.Payload)
		}
	}
}
