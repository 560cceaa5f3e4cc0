package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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

// syncWaiter is Options.Synced over the node: every client that subscribed
// waits for the same round of one goroutine that asks the node, instead of
// each holding an OS thread in the node's blocking wait (a burst of
// connecting clients held dozens). A round covers the subscriptions made
// before it began, so a client that comes during one waits for the next:
// at most two of the node's poll intervals, or twice the timeout while
// Redis is down.
type syncWaiter struct {
	waitNode func() // the node's wait, which covers what was subscribed before it

	mu    sync.Mutex
	round chan struct{} // closed when the next round ends; nil: nobody waits
	busy  bool          // the goroutine runs
}

func (s *syncWaiter) wait() {
	s.mu.Lock()
	if s.round == nil {
		s.round = make(chan struct{})
	}
	ch := s.round
	if !s.busy {
		s.busy = true
		go s.loop()
	}
	s.mu.Unlock()
	<-ch
}

func (s *syncWaiter) loop() {
	for {
		s.mu.Lock()
		ch := s.round
		s.round = nil
		if ch == nil {
			s.busy = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.waitNode()
		close(ch)
	}
}
