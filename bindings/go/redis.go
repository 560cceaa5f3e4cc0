package evroute

// The Redis scale-out (docs/protocol.md, "Redis"): the library carries it by
// default (cargo feature `redis`), and evroute.pc defines EVR_FEATURE_REDIS.

/*
#include "evroute.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// RedisOptions are a RedisNode's mode and timings; zero fields take the
// pattern mode and Mastodon's timings (presence keys: TTL 1080 s, refreshed
// every 360 s). Durations are rounded up to the unit of the C option
// (seconds for the presence keys, else ms).
type RedisOptions struct {
	// Subscribe is "pattern" (one PSUBSCRIBE to timeline:*, the default) or
	// "channels" (SUBSCRIBE exactly the channels local subscribers listen to).
	Subscribe string
	// Linger keeps a channel subscribed that long after its last local
	// listener left (channels mode), so resuming clients miss nothing.
	Linger          time.Duration
	PresenceTTL     time.Duration
	PresenceRefresh time.Duration
	PollInterval    time.Duration // how often the threads check for stop and new channels (100 ms)
	BackoffMin      time.Duration // reconnect backoff after a Redis failure (100 ms doubling ...)
	BackoffMax      time.Duration // ... to 5 s)
	ConnectTimeout  time.Duration // 2 s
}

func (o RedisOptions) json() ([]byte, error) {
	fields := []struct {
		key  string
		d    time.Duration
		unit time.Duration
	}{
		{"presence_ttl_secs", o.PresenceTTL, time.Second},
		{"presence_refresh_secs", o.PresenceRefresh, time.Second},
		{"poll_interval_ms", o.PollInterval, time.Millisecond},
		{"backoff_min_ms", o.BackoffMin, time.Millisecond},
		{"backoff_max_ms", o.BackoffMax, time.Millisecond},
		{"connect_timeout_ms", o.ConnectTimeout, time.Millisecond},
		{"linger_ms", o.Linger, time.Millisecond},
	}
	opts := map[string]any{}
	if o.Subscribe != "" {
		opts["subscribe"] = o.Subscribe
	}
	for _, f := range fields {
		if f.d < 0 {
			return nil, &Error{StatusInvalidConfig, "RedisOptions: negative " + f.key}
		}
		if f.d > 0 {
			opts[f.key] = int64((f.d + f.unit - 1) / f.unit)
		}
	}
	if len(opts) == 0 {
		return nil, nil
	}
	return marshal(opts)
}

// RedisNodeStats are a RedisNode's counters since it was attached.
type RedisNodeStats struct {
	Received     uint64 // channel messages accepted by the engine
	Rejected     uint64 // malformed messages on routed channels (logged, skipped)
	Ignored      uint64 // messages on timeline:* channels evroute does not route
	Reconnects   uint64 // connections re-established after a Redis failure
	PresenceKeys uint64 // presence keys currently kept alive
	// Subscriptions of the ingest connection: 1 (pattern mode) or the number of
	// channels (channels mode); 0 while disconnected.
	Subscriptions  uint64
	SystemReceived uint64 // messages of listened system channels queued for NextSystem
	SystemDropped  uint64 // ... dropped because 4096 were waiting
}

// RedisNode is an engine's link to Redis: background threads that route
// every `[<namespace>:]timeline:*` message in channel mode and keep
// Mastodon's presence keys. It keeps the routing domain alive, so the Engine
// may be closed first. Safe for concurrent use.
type RedisNode struct {
	mu  sync.RWMutex // calls hold it shared; Close holds it exclusively to free
	ptr *C.evr_redis_node
}

// AttachRedis attaches the engine to Redis at url ("redis://127.0.0.1:6379/");
// the namespace is the engine's RedisNamespace. It fails only on bad
// arguments: an unreachable Redis is retried in the background with backoff
// (see WaitSubscribed).
func (e *Engine) AttachRedis(url string, opts RedisOptions) (*RedisNode, error) {
	raw, err := opts.json()
	if err != nil {
		return nil, err
	}
	ptr, err := e.use()
	if err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	u := []byte(url)
	up, un := bytesArg(u)
	op, on := bytesArg(raw)
	var out *C.evr_redis_node
	_, err = call(func() C.int { return C.int(C.evr_redis_node_attach(ptr, up, un, op, on, &out)) })
	runtime.KeepAlive(u)
	runtime.KeepAlive(raw)
	runtime.KeepAlive(e)
	if err != nil {
		return nil, err
	}
	n := &RedisNode{ptr: out}
	runtime.SetFinalizer(n, (*RedisNode).Close)
	return n, nil
}

func (n *RedisNode) use() (*C.evr_redis_node, error) {
	n.mu.RLock()
	if n.ptr == nil {
		n.mu.RUnlock()
		return nil, &Error{StatusClosed, "redis node is closed"}
	}
	return n.ptr, nil
}

// WaitSubscribed waits up to timeout (<= 0: just check) until the node is
// subscribed, so messages published from then on are received. It returns
// false when it is not (Redis unreachable or still connecting) and an error
// matching ErrClosed once the node is stopped.
func (n *RedisNode) WaitSubscribed(timeout time.Duration) (bool, error) {
	return n.wait(timeout, func(p *C.evr_redis_node, ms C.uint32_t) C.int {
		return C.int(C.evr_redis_node_wait_subscribed(p, ms))
	})
}

// WaitSynced waits up to timeout (<= 0: just check) until the node receives
// every channel the engine's subscribers listen to now: in the channels mode
// a new channel is subscribed within a poll interval, so a host calls it
// after subscribing a client to miss nothing published from then on. In the
// pattern mode it is WaitSubscribed.
func (n *RedisNode) WaitSynced(timeout time.Duration) (bool, error) {
	return n.wait(timeout, func(p *C.evr_redis_node, ms C.uint32_t) C.int {
		return C.int(C.evr_redis_node_wait_synced(p, ms))
	})
}

func (n *RedisNode) wait(timeout time.Duration, f func(*C.evr_redis_node, C.uint32_t) C.int) (bool, error) {
	ptr, err := n.use()
	if err != nil {
		return false, err
	}
	defer n.mu.RUnlock()
	ms := waitMS(timeout)
	st, err := call(func() C.int { return f(ptr, ms) })
	runtime.KeepAlive(n)
	switch {
	case err != nil:
		return false, err
	case st == StatusClosed:
		return false, &Error{StatusClosed, "redis node is stopped"}
	}
	return st == StatusOK, nil
}

// waitMS is a wait in whole milliseconds, rounded up, at most maxWait.
func waitMS(timeout time.Duration) C.uint32_t {
	if timeout <= 0 {
		return 0
	}
	if timeout > maxWait {
		timeout = maxWait
	}
	return C.uint32_t((timeout + time.Millisecond - 1) / time.Millisecond)
}

// Stats returns the node's counters (also after Stop).
func (n *RedisNode) Stats() (RedisNodeStats, error) {
	ptr, err := n.use()
	if err != nil {
		return RedisNodeStats{}, err
	}
	defer n.mu.RUnlock()
	var st C.evr_redis_node_stats
	_, err = call(func() C.int { return C.int(C.evr_redis_node_get_stats(ptr, &st)) })
	runtime.KeepAlive(n)
	return RedisNodeStats{
		uint64(st.received), uint64(st.rejected), uint64(st.ignored), uint64(st.reconnects),
		uint64(st.presence_keys), uint64(st.subscriptions), uint64(st.system_received), uint64(st.system_dropped),
	}, err
}

// SystemMessage is a message of a system channel the host listens to.
type SystemMessage struct {
	Channel string // as listened to, without the namespace
	Payload []byte // as published, e.g. {"event":"kill"}
}

// ListenSystem listens to a system channel, Mastodon's
// timeline:access_token:<id> or timeline:system:<account> (without the
// namespace): the node receives it next to the channels it routes (again
// after a reconnect; WaitSynced covers it), keeps no presence key for it, and
// queues its messages for NextSystem. Reference-counted: each call needs one
// UnlistenSystem. A channel outside timeline: or one the engine routes is an
// error matching ErrInvalidChannel.
func (n *RedisNode) ListenSystem(channel string) error {
	_, err := n.system(channel, func(p *C.evr_redis_node, cp *C.uint8_t, cn C.size_t) C.int {
		return C.int(C.evr_redis_node_listen_system(p, cp, cn))
	})
	return err
}

// UnlistenSystem ends one ListenSystem of the channel; the last one
// unsubscribes it. It reports whether the channel was listened to.
func (n *RedisNode) UnlistenSystem(channel string) (bool, error) {
	st, err := n.system(channel, func(p *C.evr_redis_node, cp *C.uint8_t, cn C.size_t) C.int {
		return C.int(C.evr_redis_node_unlisten_system(p, cp, cn))
	})
	return err == nil && st == StatusOK, err
}

func (n *RedisNode) system(channel string, f func(*C.evr_redis_node, *C.uint8_t, C.size_t) C.int) (Status, error) {
	ptr, err := n.use()
	if err != nil {
		return 0, err
	}
	defer n.mu.RUnlock()
	ch := []byte(channel)
	cp, cn := bytesArg(ch)
	st, err := call(func() C.int { return f(ptr, cp, cn) })
	runtime.KeepAlive(ch)
	runtime.KeepAlive(n)
	return st, err
}

// NextSystem waits up to timeout (<= 0: just check) for the next message of a
// listened system channel; nil when none came. Once the node is stopped and
// every message received before is handed out, it returns an error matching
// ErrClosed. It holds an OS thread while it waits: one goroutine calls it.
func (n *RedisNode) NextSystem(timeout time.Duration) (*SystemMessage, error) {
	ptr, err := n.use()
	if err != nil {
		return nil, err
	}
	defer n.mu.RUnlock()
	ms := waitMS(timeout)
	var msg *C.evr_system_message
	st, err := call(func() C.int { return C.int(C.evr_redis_node_next_system(ptr, ms, &msg)) })
	runtime.KeepAlive(n)
	switch {
	case err != nil:
		return nil, err
	case st == StatusClosed:
		return nil, &Error{StatusClosed, "redis node is stopped"}
	case st != StatusOK:
		return nil, nil
	}
	defer C.evr_system_message_free(msg)
	var cl, pl C.size_t
	cp := C.evr_system_message_channel(msg, &cl)
	pp := C.evr_system_message_payload(msg, &pl)
	return &SystemMessage{Channel: string(C.GoBytes(unsafe.Pointer(cp), C.int(cl))), Payload: C.GoBytes(unsafe.Pointer(pp), C.int(pl))}, nil
}

// Stop stops the node's threads and waits for them; nothing more is received
// and presence keys are left to expire. Subscribers are not affected.
// Idempotent; Stats still works afterwards.
func (n *RedisNode) Stop() error {
	ptr, err := n.use()
	if err != nil {
		return err
	}
	defer n.mu.RUnlock()
	_, err = call(func() C.int { return C.int(C.evr_redis_node_stop(ptr)) })
	runtime.KeepAlive(n)
	return err
}

// Close stops the node (which ends a WaitSubscribed in another goroutine)
// and frees it. Safe to call twice and from any goroutine.
func (n *RedisNode) Close() error {
	if ptr, err := n.use(); err == nil {
		C.evr_redis_node_stop(ptr) // allowed concurrently with other calls
		n.mu.RUnlock()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ptr != nil {
		C.evr_redis_node_free(n.ptr)
		n.ptr = nil
		runtime.SetFinalizer(n, nil)
	}
	return nil
}

// RedisPublished is what one publish to Redis did.
type RedisPublished struct {
	Channels  uint64 // Redis channels the message was published to
	Receivers uint64 // sum of PUBLISH replies: how many nodes got a copy
}

// RedisPublisher publishes events to Redis as Mastodon channel messages, so
// that every attached node delivers them. It does not reconnect: after an
// error matching ErrIO, close it and create a new one. Safe for concurrent
// use (calls are serialized).
type RedisPublisher struct {
	mu  sync.RWMutex
	ptr *C.evr_redis_publisher
}

// NewRedisPublisher connects to Redis at url; namespace is Mastodon's
// REDIS_NAMESPACE ("" for none) and must match the nodes' RedisNamespace.
func NewRedisPublisher(url, namespace string) (*RedisPublisher, error) {
	u, ns := []byte(url), []byte(namespace)
	up, un := bytesArg(u)
	np, nn := bytesArg(ns)
	var out *C.evr_redis_publisher
	_, err := call(func() C.int { return C.int(C.evr_redis_publisher_new(up, un, np, nn, &out)) })
	runtime.KeepAlive(u)
	runtime.KeepAlive(ns)
	if err != nil {
		return nil, err
	}
	p := &RedisPublisher{ptr: out}
	runtime.SetFinalizer(p, (*RedisPublisher).Close)
	return p, nil
}

func (p *RedisPublisher) use() (*C.evr_redis_publisher, error) {
	p.mu.RLock()
	if p.ptr == nil {
		p.mu.RUnlock()
		return nil, &Error{StatusClosed, "redis publisher is closed"}
	}
	return p.ptr, nil
}

// Publish publishes an event in content mode: to every channel its content
// rules (docs/protocol.md, "Content mode") derive. Bad input is refused and nothing is published.
func (p *RedisPublisher) Publish(event []byte) (RedisPublished, error) {
	ptr, err := p.use()
	if err != nil {
		return RedisPublished{}, err
	}
	defer p.mu.RUnlock()
	ep, en := bytesArg(event)
	var out C.evr_redis_published
	_, err = call(func() C.int { return C.int(C.evr_redis_publish(ptr, ep, en, &out)) })
	runtime.KeepAlive(event)
	runtime.KeepAlive(p)
	return RedisPublished{uint64(out.channels), uint64(out.receivers)}, err
}

// PublishChannel checks a channel ("timeline:public") and a message
// {"event":E,"payload":P} as a node would, then publishes the message unchanged.
func (p *RedisPublisher) PublishChannel(channel string, msg []byte) (RedisPublished, error) {
	ptr, err := p.use()
	if err != nil {
		return RedisPublished{}, err
	}
	defer p.mu.RUnlock()
	ch := []byte(channel)
	cp, cn := bytesArg(ch)
	mp, mn := bytesArg(msg)
	var out C.evr_redis_published
	_, err = call(func() C.int { return C.int(C.evr_redis_publish_channel(ptr, cp, cn, mp, mn, &out)) })
	runtime.KeepAlive(ch)
	runtime.KeepAlive(msg)
	runtime.KeepAlive(p)
	return RedisPublished{uint64(out.channels), uint64(out.receivers)}, err
}

// Close closes the connection and frees the publisher. Safe to call twice.
func (p *RedisPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ptr != nil {
		C.evr_redis_publisher_free(p.ptr)
		p.ptr = nil
		runtime.SetFinalizer(p, nil)
	}
	return nil
}
