package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/evroute/evroute/bindings/go/streaming"
	"github.com/redis/go-redis/v9"
)

// systemBus subscribes Mastodon's system channels (kill, filters_changed)
// with go-redis, which subscribes them again after a reconnect. Listen and
// Unlisten only queue: the handler calls them under its lock.
type systemBus struct {
	ps       *redis.PubSub
	prefix   string // "<namespace>:" or ""
	ops      chan busOp
	received atomic.Uint64
	log      *slog.Logger
}

type busOp struct {
	subscribe bool
	channel   string
}

func newSystemBus(client *redis.Client, namespace string, log *slog.Logger) *systemBus {
	b := &systemBus{
		ps:  client.Subscribe(context.Background()),
		ops: make(chan busOp, 4096),
		log: log,
	}
	if namespace != "" {
		b.prefix = namespace + ":"
	}
	return b
}

func (b *systemBus) Listen(channel string)   { b.ops <- busOp{true, b.prefix + channel} }
func (b *systemBus) Unlisten(channel string) { b.ops <- busOp{false, b.prefix + channel} }

// run applies the queued (un)subscriptions in batches and hands every
// message to the handler, until ctx ends.
func (b *systemBus) run(ctx context.Context, h *streaming.Handler) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case op := <-b.ops:
				// The last operation on a channel wins.
				last := map[string]bool{}
				for more := true; more; {
					last[op.channel] = op.subscribe
					select {
					case op = <-b.ops:
					default:
						more = false
					}
				}
				var sub, unsub []string
				for ch, s := range last {
					if s {
						sub = append(sub, ch)
					} else {
						unsub = append(unsub, ch)
					}
				}
				if len(sub) > 0 {
					if err := b.ps.Subscribe(ctx, sub...); err != nil {
						b.log.Warn("Redis SUBSCRIBE of system channels failed; retried on reconnect", "err", err)
					}
				}
				if len(unsub) > 0 {
					if err := b.ps.Unsubscribe(ctx, unsub...); err != nil {
						b.log.Warn("Redis UNSUBSCRIBE of system channels failed", "err", err)
					}
				}
			}
		}
	}()
	for msg := range b.ps.Channel() {
		b.received.Add(1)
		h.SystemMessage(strings.TrimPrefix(msg.Channel, b.prefix), []byte(msg.Payload))
	}
}
