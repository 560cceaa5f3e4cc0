// Package streaming is Mastodon's streaming API (SSE and WebSocket) on
// evroute, as an http.Handler that any Go server can mount.
//
// Authentication and viewer state come through interfaces (TokenStore,
// ViewerStore), so a server that is not Mastodon can plug in its own; the
// evroute-streaming command implements them with Mastodon's Postgres schema.
// Events reach the handler's engine from elsewhere (a Redis node, or
// Engine.Publish); system channels (kill, filters_changed) through
// SystemMessage.
//
// No database is queried per message: each account's viewer state is loaded
// when it connects, shared by its connections and refreshed in batches.
package streaming

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Handler. Engine, Tokens and Viewers are required.
type Options struct {
	Engine  *evroute.Engine
	Tokens  TokenStore
	Viewers ViewerStore
	System  SystemBus // optional: without it, kill and filters_changed are not received

	// Ready reports whether events can arrive (the Redis ingest is
	// subscribed): /api/v1/streaming/ready answers 200 or 503. Nil: always.
	Ready func() bool

	// Synced, when set, is called after a client's subscription and before
	// it is acknowledged (":)" on SSE), so that an ingest which subscribes
	// channel by channel receives what is published from then on; it should
	// give up after a short while when the ingest is down.
	Synced func()

	// Registerer receives the metrics; Gatherer, when set, is served on
	// /metrics. Nil Registerer: a private registry.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer

	Logger *slog.Logger // nil: slog.Default()

	// TrustedProxies decide whose X-Forwarded-For gives the client address
	// in the request log (Mastodon's TRUSTED_PROXY_IP). Nil: loopback and
	// unique-local addresses, Mastodon's default.
	TrustedProxies *TrustedProxies

	Heartbeat       time.Duration // SSE ":thump" interval; 0: 15 s
	PingInterval    time.Duration // WebSocket ping interval; 0: 30 s
	RefreshInterval time.Duration // viewer state refresh; 0: 60 s; < 0: never
	WriteTimeout    time.Duration // a write that takes longer ends the connection; 0: 30 s
	BatchBytes      int           // bytes drained per write (at least one frame); 0: 64 KiB

	QueueCapacity int    // per-connection queue, in frames; 0: the engine's
	Overflow      string // per-connection overflow policy; "": the engine's

	// EventIDs gives frames their ids (SSE "id:" lines, a WebSocket "id"
	// key) and lets clients resume (SERVER.md §7): Last-Event-ID on SSE,
	// last_event_id on WebSocket. The engine must keep history.
	EventIDs bool
}

// Handler serves Mastodon's streaming API. Create it with New; stop it with
// Shutdown.
type Handler struct {
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	read     atomic.Uint64 // frames taken from subscribers, for the queue depth gauge
	feed     atomic.Pointer[FeedAccess]
	accounts accounts
	system   systemChannels
	done     chan struct{}
	promh    http.Handler

	mu      sync.Mutex
	closing bool
	batches sync.Pool
	conns   map[*conn]struct{}
	wg      sync.WaitGroup
}

// New checks the options and starts the refresh loop.
func New(opts Options) (*Handler, error) {
	if opts.Engine == nil || opts.Tokens == nil || opts.Viewers == nil {
		return nil, errors.New("streaming: Engine, Tokens and Viewers are required")
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = 30 * time.Second
	}
	if opts.RefreshInterval == 0 {
		opts.RefreshInterval = 60 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 64 << 10
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if err := startWriters(); err != nil {
		return nil, fmt.Errorf("streaming: writers: %w", err)
	}
	h := &Handler{
		opts:  opts,
		log:   opts.Logger,
		done:  make(chan struct{}),
		conns: map[*conn]struct{}{},
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.opts.TrustedProxies == nil {
		h.opts.TrustedProxies, _ = ParseTrustedProxies("")
	}
	h.metrics = newMetrics(opts.Registerer, opts.Engine, &h.read)
	h.accounts = accounts{h: h, m: map[string]*account{}}
	h.system = systemChannels{m: map[string][]*conn{}}
	if opts.Gatherer != nil {
		h.promh = promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{})
	}
	h.loadFeedAccessNow()
	if opts.RefreshInterval > 0 {
		go h.refreshLoop()
	}
	return h, nil
}

func (h *Handler) subscriberJSON(account string, filters []byte) []byte {
	// The connection's own keys, then the members of the account's filters
	// object (engineJSON's, which has none of these keys): spliced, not
	// decoded and encoded again, since the object holds every blocked and
	// muted id.
	raw := append(make([]byte, 0, len(filters)+96), `{"account":`...)
	raw = appendJSONString(raw, account)
	if h.opts.QueueCapacity > 0 {
		raw = strconv.AppendInt(append(raw, `,"queue_capacity":`...), int64(h.opts.QueueCapacity), 10)
	}
	if h.opts.Overflow != "" {
		raw = appendJSONString(append(raw, `,"overflow":`...), h.opts.Overflow)
	}
	if h.opts.EventIDs {
		raw = append(raw, `,"event_ids":true`...)
	}
	if obj := bytes.TrimSpace(filters); len(obj) >= 2 && obj[0] == '{' && obj[len(obj)-1] == '}' {
		if members := bytes.TrimSpace(obj[1 : len(obj)-1]); len(members) > 0 {
			raw = append(append(raw, ','), members...)
		}
	}
	return append(raw, '}')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

func (h *Handler) track(c *conn) {
	h.mu.Lock()
	h.conns[c] = struct{}{}
	if h.closing { // Shutdown ran while this connection was being set up
		c.stop(stopShutdown)
	}
	h.mu.Unlock()
	h.metrics.clients.WithLabelValues(c.kind).Inc()
}

func (h *Handler) untrack(c *conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.metrics.clients.WithLabelValues(c.kind).Dec()
}

// begin registers a request that may become a stream; false once shutting down.
func (h *Handler) begin() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.wg.Add(1)
	return true
}

// Shutdown ends every stream (SSE responses end, WebSockets close with 1001),
// refuses new ones, and waits for them until ctx is done.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if !h.closing {
		h.closing = true
		close(h.done)
	}
	for c := range h.conns {
		c.stop(stopShutdown)
	}
	h.mu.Unlock()
	finished := make(chan struct{})
	go func() { h.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = errUnexpected
	}
	writeJSON(w, he.status, map[string]string{"error": he.message})
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// ServeHTTP routes as Mastodon's streaming server does.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("X-Request-Id", reqID)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	h.logRequest(r, reqID)
	if isUpgrade(r) {
		h.serveWebSocket(w, r, reqID)
		return
	}
	switch {
	case r.Method == http.MethodOptions:
		w.Header().Set("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE")
		if hdr := r.Header.Get("Access-Control-Request-Headers"); hdr != "" {
			w.Header().Set("Access-Control-Allow-Headers", hdr)
			w.Header().Add("Vary", "Access-Control-Request-Headers")
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == prefix+"/health":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("OK"))
	case r.URL.Path == prefix+"/ready":
		w.Header().Set("Content-Type", "text/plain")
		if h.opts.Ready != nil && !h.opts.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("Redis ingest not subscribed"))
			return
		}
		_, _ = w.Write([]byte("OK"))
	case r.URL.Path == "/metrics" && h.promh != nil:
		h.promh.ServeHTTP(w, r)
	case r.URL.Path == "/favicon.ico":
		w.WriteHeader(http.StatusNotFound)
	default:
		h.serveSSE(w, r)
	}
}

// logRequest logs a request as Mastodon's HTTP logger does, with the client
// address behind trusted proxies; not the polled health, readiness and
// metrics endpoints. The query is left out: it may hold the access token.
func (h *Handler) logRequest(r *http.Request, reqID string) {
	switch r.URL.Path {
	case prefix + "/health", prefix + "/ready", "/metrics":
		return
	}
	if !h.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	h.log.Info("HTTP request", "method", r.Method, "path", r.URL.Path, "upgrade", isUpgrade(r),
		"remote", h.opts.TrustedProxies.ClientAddr(r), "request_id", reqID)
}

// serveSSE is one event-stream response.
func (h *Handler) serveSSE(w http.ResponseWriter, r *http.Request) {
	stream, ok := ssePaths[r.URL.Path]
	if !ok {
		writeError(w, errUnknownChannel)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not found"})
		return
	}
	if !h.begin() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Server is shutting down"})
		return
	}
	// finish releases what the stream holds, in reverse order of taking it;
	// once the response is hijacked, the stream's own goroutine runs it.
	finish := h.wg.Done
	defer func() {
		if finish != nil {
			finish()
		}
	}()
	id, err := h.authenticate(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	res, err := h.resolve(r.Context(), id, streamRequest{
		Stream: stream, Tag: q.Get("tag"), List: q.Get("list"), OnlyMedia: isTruthy(q.Get("only_media")),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	acct, err := h.accounts.acquire(r.Context(), id.AccountID)
	if err != nil {
		h.log.Error("viewer state load failed", "account", id.AccountID, "err", err)
		writeError(w, errUnexpected)
		return
	}
	done := finish
	finish = func() { h.accounts.release(acct); done() }
	c, err := h.open(id, acct, "eventsource")
	if err == nil {
		if err = c.subscribe(res); err != nil {
			c.close()
		}
	}
	if err != nil {
		h.log.Error("subscribe failed", "err", err)
		writeError(w, errUnexpected)
		return
	}
	released := finish
	finish = func() { c.close(); released() }

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "private, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get("last_event_id")
	}
	wr := h.sseWire(w, r, func() { c.stop(stopGone) })
	if wr.Conn == nil { // not hijacked: net/http's goroutine streams
		stopOnGone := context.AfterFunc(r.Context(), func() { c.stop(stopGone) })
		defer stopOnGone()
		ended := make(chan struct{})
		h.streamSSE(c, wr, lastID, func() { close(ended) })
		<-ended
		return
	}
	// Hijacked: the stream goes on without net/http's goroutine (the
	// writers write it, see writer.go), so that its buffers and request
	// state are released while the client stays connected.
	end := finish
	finish = nil
	go h.streamSSE(c, wr, lastID, end)
}

// streamSSE writes the stream after the head until it ends, then runs end.
func (h *Handler) streamSSE(c *conn, wr *wire, lastID string, end func()) {
	done := func() {
		wr.close(c.reason.Load())
		end()
	}
	write := func(b []byte) bool { return wr.sse(b, nil) == nil }
	if h.opts.Synced != nil {
		h.opts.Synced()
	}
	gap := h.resume(c, lastID)
	if !write([]byte(":)\n")) || gap && !write([]byte("event: evroute.gap\ndata: "+sseData(lastID)+"\n\n")) {
		done()
		return
	}
	h.stream(c, wr, false, h.opts.Heartbeat, func() bool { return write([]byte(":thump\n\n")) }, done)
}

// resume replays what a reconnecting client missed since lastID (SERVER.md
// §7); true when it cannot be complete and the client must be told with
// the evroute.gap event. No id, or no event ids: nothing to do.
func (h *Handler) resume(c *conn, lastID string) bool {
	if lastID == "" || !h.opts.EventIDs {
		return false
	}
	gap, err := c.sub.Resume(lastID)
	switch {
	case errors.Is(err, evroute.ErrInvalidID):
		gap = true // not an id of ours: what it missed is unknown
	case err != nil:
		h.log.Error("resume failed", "err", err)
		gap = true
	}
	result := "complete"
	if gap {
		result = "gap"
	}
	h.metrics.resumes.WithLabelValues(result).Inc()
	return gap
}

// sseData keeps a client-supplied id on one SSE data line.
func sseData(s string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}
