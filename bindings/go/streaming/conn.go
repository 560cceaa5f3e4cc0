package streaming

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
)

// Why a connection ends (besides its client going away).
const (
	stopNone     int32 = iota
	stopKill           // a kill system message
	stopShutdown       // the server drains (SIGTERM)
	stopGone           // the client went away or a write failed
	stopTimeout        // a WebSocket client did not answer a ping
)

// conn is one client connection: its subscriber and a Waiter on that
// subscriber's readiness fd, in Go's own poller so waiting holds no OS thread.
type conn struct {
	h       *Handler
	id      *Identity
	acct    *account
	kind    string // "eventsource" or "websocket"
	sub     *evroute.Subscriber
	waiter  *evroute.Waiter
	reason  atomic.Int32
	subOnce sync.Once
	dropped uint64     // frames the subscriber dropped, read when it is closed
	mu      sync.Mutex // guards streams
	streams map[string]*resolved
}

// open creates the connection's subscriber (with the account's current
// viewer state) and registers its readiness fd.
func (h *Handler) open(id *Identity, acct *account, kind string) (*conn, error) {
	c := &conn{h: h, id: id, acct: acct, kind: kind, streams: map[string]*resolved{}}
	err := acct.attach(c, func(filters []byte) (*evroute.Subscriber, error) {
		return h.opts.Engine.NewSubscriberJSON(h.subscriberJSON(id.AccountID, filters))
	})
	if err != nil {
		return nil, err
	}
	c.waiter, err = c.sub.NewWaiter()
	if err != nil {
		c.close()
		return nil, err
	}
	h.track(c)
	h.listenSystem(c)
	return c, nil
}

// close releases everything the connection holds; safe to call once per open.
func (c *conn) close() {
	h := c.h
	c.mu.Lock()
	for _, r := range c.streams {
		h.metrics.channels.WithLabelValues(c.kind, r.label).Dec()
	}
	c.streams = nil
	c.mu.Unlock()
	if c.waiter != nil {
		h.unlistenSystem(c)
		h.untrack(c)
		c.waiter.Close() // leaves the poller before the eventfd goes away
	}
	c.acct.detach(c)
	c.closeSubscriber()
	h.metrics.dropped.WithLabelValues("overflow").Add(float64(c.dropped))
}

// closeSubscriber closes the subscriber once, noting what it dropped and
// whether the engine had closed it as a slow consumer.
func (c *conn) closeSubscriber() {
	c.subOnce.Do(func() {
		if st, err := c.sub.Stats(); err == nil {
			c.dropped = st.Dropped
		}
		if c.sub.Closed() == "slow consumer" {
			c.h.metrics.disconnects.WithLabelValues("slow_consumer").Inc()
		}
		c.sub.Close()
	})
}

// stop ends the connection: closing its subscriber wakes a wait in progress
// (the readiness fd turns readable) or makes the next one return at once,
// and the next drain reports it closed.
func (c *conn) stop(reason int32) {
	if c.reason.CompareAndSwap(stopNone, reason) {
		c.closeSubscriber()
	}
}

// wait blocks the goroutine (not a thread) until frames may be waiting, the
// deadline passes (returns false) or the connection is stopped.
func (c *conn) wait(deadline time.Time) bool {
	return c.reason.Load() == stopNone && c.waiter.Wait(deadline) == nil
}

// subscribe adds a resolved subscription; a repeated one is ignored.
func (c *conn) subscribe(r *resolved) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams == nil || c.streams[r.key] != nil || c.reason.Load() != stopNone {
		return nil // repeated, or the connection is ending
	}
	if !r.hidden {
		if err := c.sub.Subscribe(r.sub); err != nil {
			return err
		}
	}
	c.streams[r.key] = r
	c.h.metrics.channels.WithLabelValues(c.kind, r.label).Inc()
	return nil
}

func (c *conn) unsubscribe(r *resolved) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams == nil || c.streams[r.key] == nil {
		return nil
	}
	old := c.streams[r.key]
	delete(c.streams, r.key)
	c.h.metrics.channels.WithLabelValues(c.kind, r.label).Dec()
	if old.hidden {
		return nil
	}
	return c.sub.Unsubscribe(old.sub)
}

// errSubscriberClosed ends a connection whose subscriber the engine closed
// (a slow consumer under the disconnect policy).
var errSubscriberClosed = errors.New("subscriber closed")

// drain takes the frames waiting for the subscriber, as many whole frames as
// fit in b (at least one), in the encoding the connection needs: one cgo call.
func (c *conn) drain(b *evroute.Batch, ws bool) (int, error) {
	enc := evroute.EncodingSSE
	if ws {
		enc = evroute.EncodingWS
	}
	n, err := c.sub.Drain(b, enc, 0)
	if errors.Is(err, evroute.ErrClosed) {
		return 0, errSubscriberClosed
	}
	return n, err
}
