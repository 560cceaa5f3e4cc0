package evroute

/*
#include <stdlib.h>
#include "evroute.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Status is the C evr_status of a call.
type Status int

// The evr_status values of include/evroute.h.
const (
	StatusOK                  Status = C.EVR_OK
	StatusEmpty               Status = C.EVR_EMPTY
	StatusTimeout             Status = C.EVR_TIMEOUT
	StatusClosed              Status = C.EVR_CLOSED
	StatusGap                 Status = C.EVR_GAP
	StatusNull                Status = C.EVR_ERR_NULL
	StatusInvalidUTF8         Status = C.EVR_ERR_INVALID_UTF8
	StatusInvalidJSON         Status = C.EVR_ERR_INVALID_JSON
	StatusInvalidSubscription Status = C.EVR_ERR_INVALID_SUBSCRIPTION
	StatusInvalidChannel      Status = C.EVR_ERR_INVALID_CHANNEL
	StatusInvalidEvent        Status = C.EVR_ERR_INVALID_EVENT
	StatusTooLarge            Status = C.EVR_ERR_TOO_LARGE
	StatusInvalidConfig       Status = C.EVR_ERR_INVALID_CONFIG
	StatusIO                  Status = C.EVR_ERR_IO
	StatusPanic               Status = C.EVR_ERR_PANIC
	StatusInvalidID           Status = C.EVR_ERR_INVALID_ID
)

// Error is a failed call: the C status and the evr_last_error message.
// errors.Is(err, ErrInvalidJSON) and the like compare by status.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return "evroute: " + e.Message }

// Is reports whether target is an *Error with the same status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Sentinels for errors.Is.
var (
	ErrClosed              = &Error{StatusClosed, "closed"}
	ErrNull                = &Error{StatusNull, "null argument"}
	ErrInvalidUTF8         = &Error{StatusInvalidUTF8, "invalid UTF-8"}
	ErrInvalidJSON         = &Error{StatusInvalidJSON, "invalid JSON"}
	ErrInvalidSubscription = &Error{StatusInvalidSubscription, "invalid subscription"}
	ErrInvalidChannel      = &Error{StatusInvalidChannel, "invalid channel"}
	ErrInvalidEvent        = &Error{StatusInvalidEvent, "invalid event"}
	ErrTooLarge            = &Error{StatusTooLarge, "event too large"}
	ErrInvalidConfig       = &Error{StatusInvalidConfig, "invalid config"}
	ErrIO                  = &Error{StatusIO, "I/O error"}
	ErrPanic               = &Error{StatusPanic, "panic inside evroute"}
	ErrInvalidID           = &Error{StatusInvalidID, "invalid event id"}
)

// call runs one fallible C call and, on a negative status, reads
// evr_last_error. The goroutine stays on one OS thread for both because
// the message is thread-local.
func call(f func() C.int) (Status, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := Status(f())
	if st < 0 {
		return st, &Error{Status: st, Message: C.GoString(C.evr_last_error())}
	}
	return st, nil
}

// bytesArg gives C a pointer to b for the duration of one call (C never
// keeps it). An empty slice is (NULL, 0).
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// Version is the linked library's version (evr_version()).
func Version() string { return C.GoString(C.evr_version()) }

// Config is the engine configuration (docs/protocol.md, "Engine config"); zero fields take the defaults.
type Config struct {
	QueueCapacity  int    `json:"queue_capacity,omitempty"`
	Overflow       string `json:"overflow,omitempty"` // drop_oldest (default), drop_newest, disconnect
	MaxEventBytes  int    `json:"max_event_bytes,omitempty"`
	DeleteMemory   *int   `json:"delete_memory,omitempty"` // nil: default; 0 turns delete routing by memory off
	RedisNamespace string `json:"redis_namespace,omitempty"`
	// History keeps each channel's recent frames for Subscriber.Resume; nil: off.
	History *HistoryConfig `json:"history,omitempty"`
}

// HistoryConfig bounds each channel's history (docs/protocol.md, "Event ids, history and resume"); zero fields take
// the defaults (1000 events, 300 s).
type HistoryConfig struct {
	MaxEvents  int `json:"max_events,omitempty"`
	MaxAgeSecs int `json:"max_age_s,omitempty"`
}

// SubscriberOptions are the subscriber keys (docs/protocol.md, "Subscriber options"); zero fields take the defaults.
type SubscriberOptions struct {
	Account         string   `json:"account,omitempty"`
	Languages       []string `json:"languages,omitempty"`
	BlockedAccounts []string `json:"blocked_accounts,omitempty"`
	MutedAccounts   []string `json:"muted_accounts,omitempty"`
	BlockedDomains  []string `json:"blocked_domains,omitempty"`
	// BlockedByAccounts are accounts that block the viewer: their statuses
	// are hidden on public and hashtag streams (author only, docs/protocol.md "Viewer filters").
	BlockedByAccounts []string `json:"blocked_by_accounts,omitempty"`
	// KeywordFilters, when non-nil (even empty), make the subscriber
	// filter-annotated: statuses on public and hashtag streams carry
	// Mastodon's "filtered" key (docs/protocol.md, "Keyword filters"). nil: not annotated.
	KeywordFilters []KeywordFilter `json:"-"`
	QueueCapacity  int             `json:"queue_capacity,omitempty"`
	Overflow       string          `json:"overflow,omitempty"`
	// EventIDs puts each frame's id in its bytes: an SSE "id:" line and a
	// WebSocket "id" key (needs History on the engine).
	EventIDs bool `json:"event_ids,omitempty"`
}

// MarshalJSON writes keyword_filters only when KeywordFilters is non-nil.
func (o SubscriberOptions) MarshalJSON() ([]byte, error) {
	type plain SubscriberOptions
	return json.Marshal(struct {
		plain
		KeywordFilters *[]KeywordFilter `json:"keyword_filters,omitempty"`
	}{plain(o), presentIfNonNil(o.KeywordFilters)})
}

// Filters are the viewer state that Subscriber.Update replaces as a whole.
type Filters struct {
	Languages         []string `json:"languages,omitempty"`
	BlockedAccounts   []string `json:"blocked_accounts,omitempty"`
	MutedAccounts     []string `json:"muted_accounts,omitempty"`
	BlockedDomains    []string `json:"blocked_domains,omitempty"`
	BlockedByAccounts []string `json:"blocked_by_accounts,omitempty"`
	// KeywordFilters as in SubscriberOptions: nil ends filter annotation.
	KeywordFilters []KeywordFilter `json:"-"`
}

// MarshalJSON writes keyword_filters only when KeywordFilters is non-nil.
func (f Filters) MarshalJSON() ([]byte, error) {
	type plain Filters
	return json.Marshal(struct {
		plain
		KeywordFilters *[]KeywordFilter `json:"keyword_filters,omitempty"`
	}{plain(f), presentIfNonNil(f.KeywordFilters)})
}

func presentIfNonNil(f []KeywordFilter) *[]KeywordFilter {
	if f == nil {
		return nil
	}
	return &f
}

// KeywordFilter is one of a viewer's Mastodon keyword filters (docs/protocol.md, "Keyword filters").
type KeywordFilter struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Context []string `json:"context"`
	// ExpiresAt nil: never; an expired filter is skipped.
	ExpiresAt    *time.Time      `json:"expires_at"`
	FilterAction string          `json:"filter_action,omitempty"` // "warn" (default) or "hide"
	Keywords     []FilterKeyword `json:"keywords"`
}

// MarshalJSON writes nil Context and Keywords as empty arrays.
func (k KeywordFilter) MarshalJSON() ([]byte, error) {
	type plain KeywordFilter
	p := plain(k)
	if p.Context == nil {
		p.Context = []string{}
	}
	if p.Keywords == nil {
		p.Keywords = []FilterKeyword{}
	}
	return json.Marshal(p)
}

// FilterKeyword is one keyword of a KeywordFilter, matched
// case-insensitively, as whole words when WholeWord.
type FilterKeyword struct {
	Keyword   string `json:"keyword"`
	WholeWord bool   `json:"whole_word"`
}

// Subscription is a subscription (docs/protocol.md, "Subscriptions"): the Mastodon WebSocket subscribe message.
type Subscription struct {
	Stream    string   `json:"stream"`
	Tag       string   `json:"tag,omitempty"`
	List      string   `json:"list,omitempty"`
	OnlyMedia bool     `json:"only_media,omitempty"`
	Events    []string `json:"events,omitempty"` // event names or "prefix.*"
	// Origin "local" or "remote" keeps only statuses of that origin on public
	// and hashtag streams; frames still carry Stream.
	Origin string `json:"origin,omitempty"`
}

// PublishStats is what one publish did.
type PublishStats struct{ Matched, Delivered, Dropped uint64 }

// EngineStats are the engine's counters since it was created.
type EngineStats struct {
	Published, Rejected, Matched, Delivered, Dropped, Subscribers, Subscriptions uint64
	// History ring entries (one per retained event and channel) and the
	// bytes they hold (each retained event's frames counted once).
	HistoryEntries, HistoryBytes uint64
}

// SubscriberStats are one subscriber's counters; Matched == Read + Depth + Dropped.
type SubscriberStats struct{ Matched, Delivered, Dropped, Read, Depth uint64 }

// Frame is one delivery, copied out of the C frame (which is freed at once).
type Frame struct {
	Event      string
	Payload    string // the payload string; see HasPayload
	HasPayload bool   // false for events without a payload (filters_changed)
	Stream     []string
	SSE        []byte // the exact bytes for an SSE client
	WS         []byte // the exact WebSocket message
	ID         string // the event id "<epoch>:<seq>"; "" when the engine keeps no history
}

// Engine is one routing domain. Safe for concurrent use.
type Engine struct {
	mu  sync.RWMutex // calls hold it shared; Close holds it exclusively to free
	ptr *C.evr_engine
}

func marshal(v interface{}) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("evroute: %w", err)
	}
	return b, nil
}

// NewEngine creates an engine.
func NewEngine(cfg Config) (*Engine, error) {
	raw, err := marshal(cfg)
	if err != nil {
		return nil, err
	}
	return NewEngineJSON(raw)
}

// NewEngineJSON creates an engine from the engine config JSON (empty: defaults).
func NewEngineJSON(config []byte) (*Engine, error) {
	var out *C.evr_engine
	p, n := bytesArg(config)
	if _, err := call(func() C.int { return C.int(C.evr_engine_new(p, n, &out)) }); err != nil {
		return nil, err
	}
	runtime.KeepAlive(config)
	e := &Engine{ptr: out}
	runtime.SetFinalizer(e, (*Engine).Close)
	return e, nil
}

// use returns the live C engine with the read lock held, or ErrClosed.
func (e *Engine) use() (*C.evr_engine, error) {
	e.mu.RLock()
	if e.ptr == nil {
		e.mu.RUnlock()
		return nil, &Error{StatusClosed, "engine is closed"}
	}
	return e.ptr, nil
}

// Close frees the engine. Its subscribers stay usable. Safe to call twice.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ptr != nil {
		C.evr_engine_free(e.ptr)
		e.ptr = nil
		runtime.SetFinalizer(e, nil)
	}
	return nil
}

// NewSubscriber creates a subscriber (one client connection).
func (e *Engine) NewSubscriber(opts SubscriberOptions) (*Subscriber, error) {
	raw, err := marshal(opts)
	if err != nil {
		return nil, err
	}
	return e.NewSubscriberJSON(raw)
}

// NewSubscriberJSON creates a subscriber from subscriber JSON (docs/protocol.md, "Subscriber options") (empty: defaults).
func (e *Engine) NewSubscriberJSON(options []byte) (*Subscriber, error) {
	ptr, err := e.use()
	if err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	var out *C.evr_subscriber
	p, n := bytesArg(options)
	_, err = call(func() C.int { return C.int(C.evr_subscriber_new(ptr, p, n, &out)) })
	runtime.KeepAlive(options)
	runtime.KeepAlive(e)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{ptr: out}
	runtime.SetFinalizer(s, (*Subscriber).Close)
	return s, nil
}

func publishStats(st *C.evr_publish_stats) PublishStats {
	return PublishStats{uint64(st.matched), uint64(st.delivered), uint64(st.dropped)}
}

// Publish routes an event in content mode (docs/protocol.md, "Content mode").
func (e *Engine) Publish(event []byte) (PublishStats, error) {
	ptr, err := e.use()
	if err != nil {
		return PublishStats{}, err
	}
	defer e.mu.RUnlock()
	var st C.evr_publish_stats
	p, n := bytesArg(event)
	_, err = call(func() C.int { return C.int(C.evr_publish(ptr, p, n, &st)) })
	runtime.KeepAlive(event)
	runtime.KeepAlive(e)
	return publishStats(&st), err
}

// PublishChannel routes a Mastodon Redis message (docs/protocol.md, "Channel mode"): a channel such as
// "timeline:public" and {"event":E,"payload":P}.
func (e *Engine) PublishChannel(channel string, msg []byte) (PublishStats, error) {
	ptr, err := e.use()
	if err != nil {
		return PublishStats{}, err
	}
	defer e.mu.RUnlock()
	var st C.evr_publish_stats
	ch := []byte(channel)
	cp, cn := bytesArg(ch)
	mp, mn := bytesArg(msg)
	_, err = call(func() C.int { return C.int(C.evr_publish_channel(ptr, cp, cn, mp, mn, &st)) })
	runtime.KeepAlive(ch)
	runtime.KeepAlive(msg)
	runtime.KeepAlive(e)
	return publishStats(&st), err
}

// Stats returns the engine's counters.
func (e *Engine) Stats() (EngineStats, error) {
	ptr, err := e.use()
	if err != nil {
		return EngineStats{}, err
	}
	defer e.mu.RUnlock()
	var st C.evr_engine_stats
	_, err = call(func() C.int { return C.int(C.evr_engine_get_stats(ptr, &st)) })
	runtime.KeepAlive(e)
	return EngineStats{
		uint64(st.published), uint64(st.rejected), uint64(st.matched), uint64(st.delivered),
		uint64(st.dropped), uint64(st.subscribers), uint64(st.subscriptions),
		uint64(st.history_entries), uint64(st.history_bytes),
	}, err
}

// Subscriber is one client connection: a bounded frame queue and any number
// of subscriptions. Safe for concurrent use.
type Subscriber struct {
	mu  sync.RWMutex // calls hold it shared; Close holds it exclusively to free
	ptr *C.evr_subscriber
}

func (s *Subscriber) use() (*C.evr_subscriber, error) {
	s.mu.RLock()
	if s.ptr == nil {
		s.mu.RUnlock()
		return nil, &Error{StatusClosed, "closed"}
	}
	return s.ptr, nil
}

// Close unsubscribes everything and frees the subscriber. It first wakes
// goroutines blocked in Next (they return ErrClosed), then waits for the
// calls in flight. Safe to call twice and from any goroutine.
func (s *Subscriber) Close() error {
	if ptr, err := s.use(); err == nil {
		C.evr_subscriber_close(ptr) // allowed concurrently with other calls
		s.mu.RUnlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.evr_subscriber_free(s.ptr)
		s.ptr = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

func (s *Subscriber) jsonCall(raw []byte, f func(*C.evr_subscriber, *C.uint8_t, C.size_t) C.int) error {
	ptr, err := s.use()
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	p, n := bytesArg(raw)
	_, err = call(func() C.int { return f(ptr, p, n) })
	runtime.KeepAlive(raw)
	runtime.KeepAlive(s)
	return err
}

// Subscribe adds a subscription. One that listens to the same channels as an
// existing one is a no-op.
func (s *Subscriber) Subscribe(sub Subscription) error {
	raw, err := marshal(sub)
	if err != nil {
		return err
	}
	return s.SubscribeJSON(raw)
}

// SubscribeJSON adds a subscription from its JSON, e.g. a client's WebSocket
// subscribe message.
func (s *Subscriber) SubscribeJSON(raw []byte) error {
	return s.jsonCall(raw, func(p *C.evr_subscriber, b *C.uint8_t, n C.size_t) C.int {
		return C.int(C.evr_subscribe(p, b, n))
	})
}

// Unsubscribe removes the subscription the same argument would have created.
func (s *Subscriber) Unsubscribe(sub Subscription) error {
	raw, err := marshal(sub)
	if err != nil {
		return err
	}
	return s.UnsubscribeJSON(raw)
}

// UnsubscribeJSON is Unsubscribe with the subscription as JSON.
func (s *Subscriber) UnsubscribeJSON(raw []byte) error {
	return s.jsonCall(raw, func(p *C.evr_subscriber, b *C.uint8_t, n C.size_t) C.int {
		return C.int(C.evr_unsubscribe(p, b, n))
	})
}

// Resume replays what the client missed since lastID, the "<epoch>:<seq>"
// id of the last frame it saw (SSE Last-Event-ID, or a WebSocket
// parameter): retained frames of the subscriber's channels in seq order,
// through the same filters, then live frames with no gap and no duplicate.
// Call it after subscribing and before the first Next. gap is true when
// events may be missing (id from another engine run, history too short or
// off, queue too small for the replay); what was retained is delivered
// anyway and the client should be told. A malformed id is ErrInvalidID.
func (s *Subscriber) Resume(lastID string) (gap bool, err error) {
	ptr, err := s.use()
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	raw := []byte(lastID)
	p, n := bytesArg(raw)
	st, err := call(func() C.int { return C.int(C.evr_subscriber_resume(ptr, p, n)) })
	runtime.KeepAlive(raw)
	runtime.KeepAlive(s)
	return st == StatusGap, err
}

// Update replaces the viewer filters; fields left empty become empty.
func (s *Subscriber) Update(f Filters) error {
	raw, err := marshal(f)
	if err != nil {
		return err
	}
	return s.UpdateJSON(raw)
}

// UpdateJSON is Update with the filters as JSON.
func (s *Subscriber) UpdateJSON(raw []byte) error {
	return s.jsonCall(raw, func(p *C.evr_subscriber, b *C.uint8_t, n C.size_t) C.int {
		return C.int(C.evr_subscriber_update(p, b, n))
	})
}

// maxWait is the longest single wait passed to C (its timeout is uint32 ms).
const maxWait = time.Duration(1<<32-1) * time.Millisecond

// Next takes the next frame, waiting up to timeout (<= 0: don't wait). It
// returns (nil, nil) when nothing arrived, and an error matching ErrClosed
// once the subscriber is closed (Message: "closed" or "slow consumer"). The
// wait blocks an OS thread; hosts with their own poll loop can use Fd.
func (s *Subscriber) Next(timeout time.Duration) (*Frame, error) {
	deadline := time.Now().Add(timeout)
	for {
		wait := time.Until(deadline)
		if wait > maxWait {
			wait = maxWait
		}
		ms := C.uint32_t(0)
		if wait > 0 {
			ms = C.uint32_t((wait + time.Millisecond - 1) / time.Millisecond) // round up
		}
		frame, st, err := s.next(ms)
		if err != nil || frame != nil {
			return frame, err
		}
		if st == StatusEmpty || !time.Now().Before(deadline) {
			return nil, nil
		}
	}
}

func (s *Subscriber) next(ms C.uint32_t) (*Frame, Status, error) {
	ptr, err := s.use()
	if err != nil {
		return nil, StatusClosed, err
	}
	defer s.mu.RUnlock()
	var out *C.evr_frame
	st, err := call(func() C.int { return C.int(C.evr_subscriber_next(ptr, ms, &out)) })
	runtime.KeepAlive(s)
	switch {
	case err != nil:
		return nil, st, err
	case st == StatusClosed:
		return nil, st, s.closedError(ptr)
	case st == StatusOK:
		f, err := frameFrom(out)
		return f, st, err
	}
	return nil, st, nil
}

func frameFrom(f *C.evr_frame) (*Frame, error) {
	defer C.evr_frame_free(f)
	var n C.size_t
	get := func(p *C.uint8_t) []byte { return C.GoBytes(unsafe.Pointer(p), C.int(n)) }
	frame := &Frame{}
	frame.Event = string(get(C.evr_frame_event(f, &n)))
	frame.SSE = get(C.evr_frame_sse(f, &n))
	frame.WS = get(C.evr_frame_ws(f, &n))
	if p := C.evr_frame_payload(f, &n); p != nil {
		frame.Payload, frame.HasPayload = string(get(p)), true
	}
	if p := C.evr_frame_id(f, &n); p != nil {
		frame.ID = string(get(p))
	}
	if err := json.Unmarshal(get(C.evr_frame_stream(f, &n)), &frame.Stream); err != nil {
		return nil, fmt.Errorf("evroute: stream array: %w", err)
	}
	return frame, nil
}

// Fd is the readiness file descriptor: readable while frames wait or after
// the subscriber was closed (level-triggered; drain with Next(0) or Drain).
// It belongs to the subscriber: never read, write or close it, and stop
// polling it before Close. NewWaiter puts it into Go's poller.
func (s *Subscriber) Fd() (int, error) {
	ptr, err := s.use()
	if err != nil {
		return -1, err
	}
	defer s.mu.RUnlock()
	var fd C.int
	_, err = call(func() C.int { return C.int(C.evr_subscriber_fd(ptr, &fd)) })
	runtime.KeepAlive(s)
	if err != nil {
		return -1, err
	}
	return int(fd), nil
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() (SubscriberStats, error) {
	ptr, err := s.use()
	if err != nil {
		return SubscriberStats{}, err
	}
	defer s.mu.RUnlock()
	var st C.evr_subscriber_stats
	_, err = call(func() C.int { return C.int(C.evr_subscriber_get_stats(ptr, &st)) })
	runtime.KeepAlive(s)
	return SubscriberStats{
		uint64(st.matched), uint64(st.delivered), uint64(st.dropped), uint64(st.read), uint64(st.depth),
	}, err
}

// Closed is "" while the subscriber is open, else why it closed: "closed"
// or "slow consumer".
func (s *Subscriber) Closed() string {
	ptr, err := s.use()
	if err != nil {
		return "closed"
	}
	defer s.mu.RUnlock()
	r := C.evr_subscriber_closed(ptr)
	runtime.KeepAlive(s)
	if r == nil {
		return ""
	}
	return C.GoString(r)
}
