package streaming

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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

// conn is one client connection: its subscriber and, once it streams, the
// writing side (writer.go) that a writer goroutine hands its frames to.
type conn struct {
	h       *Handler
	id      *Identity
	acct    *account
	kind    string // "eventsource" or "websocket"
	sub     *evroute.Subscriber
	opened  bool // tracked and listening to system channels
	st      atomic.Pointer[stream]
	reason  atomic.Int32
	subOnce sync.Once
	dropped uint64     // frames the subscriber dropped, read when it is closed
	mu      sync.Mutex // guards streams
	streams map[string]*resolved
}

// open creates the connection's subscriber (with the account's current
// viewer state); its frames are written once the stream starts (stream).
func (h *Handler) open(id *Identity, acct *account, kind string) (*conn, error) {
	c := &conn{h: h, id: id, acct: acct, kind: kind, streams: map[string]*resolved{}}
	err := acct.attach(c, func(filters []byte) (*evroute.Subscriber, error) {
		return h.opts.Engine.NewSubscriberJSON(h.subscriberJSON(id.AccountID, filters))
	})
	if err != nil {
		return nil, err
	}
	c.opened = true
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
	if c.opened {
		h.unlistenSystem(c)
		h.untrack(c)
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

// stop ends the connection: its subscriber is closed (a drain in progress
// then reports it closed) and its stream, if it started, ends.
func (c *conn) stop(reason int32) {
	if c.reason.CompareAndSwap(stopNone, reason) {
		c.closeSubscriber()
		if st := c.st.Load(); st != nil {
			st.end()
		}
	}
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

// wire is a hijacked connection the writers write to directly: a batch goes
// out in one writev (SSE: one HTTP chunk; WebSocket: a frame header and a
// text message per frame), without net/http's or the WebSocket module's
// per-connection buffers. Writes are serialized and each gets the write
// timeout, so the WebSocket module's control frames (ping, pong, close),
// which it writes in one Write each, can share the connection.
type wire struct {
	net.Conn                     // nil: not hijacked, resp writes (HTTP/2)
	resp     http.ResponseWriter // the fallback
	timeout  time.Duration
	chunked  bool   // SSE over HTTP/1.1: every write is one chunk
	unwatch  func() // SSE: stops watching for the client's close (nil: none)
	mu       sync.Mutex
	deadline time.Time // the write deadline in force
}

// SetWriteDeadline does nothing: the wire gives each write its own
// deadline, which the WebSocket module's (a second for a pong, none at
// all) must neither shorten nor clear.
func (w *wire) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the same reason.
func (w *wire) SetDeadline(t time.Time) error { return w.SetReadDeadline(t) }

// Write is the WebSocket module's path (control frames).
func (w *wire) Write(p []byte) (int, error) {
	bufs := net.Buffers{p}
	if err := w.writev(&bufs); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writev writes *bufs, consuming it (net.Buffers.WriteTo).
func (w *wire) writev(bufs *net.Buffers) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(bufs)
}

// writeLocked is writev with w.mu held.
func (w *wire) writeLocked(bufs *net.Buffers) error {
	if w.Conn == nil {
		rc := http.NewResponseController(w.resp)
		_ = rc.SetWriteDeadline(time.Now().Add(w.timeout))
		for _, b := range *bufs {
			if _, err := w.resp.Write(b); err != nil {
				return err
			}
		}
		return rc.Flush()
	}
	// A write may take between half the timeout and all of it: the
	// deadline moves only when half of it is spent, not on every write.
	if now := time.Now(); w.deadline.Sub(now) < w.timeout/2 {
		w.deadline = now.Add(w.timeout)
		_ = w.Conn.SetWriteDeadline(w.deadline)
	}
	_, err := bufs.WriteTo(w.Conn) // one writev on a TCP or UNIX socket
	return err
}

var crlf = []byte("\r\n")

// sse writes SSE bytes, as one chunk when the response is chunked; o, when
// not nil, lends its scratch space.
func (w *wire) sse(b []byte, o *outBatch) error {
	if o == nil {
		o = &outBatch{}
	}
	w.sseIOV(b, o)
	return o.send(w)
}

// sseIOV lays out SSE bytes in o.iov, as one chunk when the response is
// chunked.
func (w *wire) sseIOV(b []byte, o *outBatch) {
	if !w.chunked {
		o.iov = append(o.iov[:0], b)
		return
	}
	o.hdr = append(strconv.AppendInt(o.hdr[:0], int64(len(b)), 16), '\r', '\n')
	o.iov = append(o.iov[:0], o.hdr, b, crlf)
}

// sseWire takes over an SSE response: it writes the head itself (chunked
// on HTTP/1.1) and calls gone when the client goes away. A response that
// cannot be hijacked (HTTP/2) is written through net/http instead.
func (h *Handler) sseWire(w http.ResponseWriter, r *http.Request, gone func()) *wire {
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		w.WriteHeader(http.StatusOK)
		return &wire{resp: w, timeout: h.opts.WriteTimeout}
	}
	wr := &wire{Conn: nc, timeout: h.opts.WriteTimeout, chunked: r.ProtoAtLeast(1, 1)}
	head := bytes.NewBufferString("HTTP/1.1 200 OK\r\n")
	_ = w.Header().Write(head)
	head.WriteString("Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n")
	if wr.chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	} else {
		head.WriteString("Connection: close\r\n\r\n")
	}
	_, _ = wr.Write(head.Bytes()) // a failure shows at the next write
	// An SSE client sends nothing more. Its going away is noticed by the
	// process's watch set, or else by a read that ends.
	if wr.unwatch = watchClose(nc, gone); wr.unwatch == nil {
		go func() {
			var b [64]byte
			for {
				if _, err := nc.Read(b[:]); err != nil {
					gone()
					return
				}
			}
		}()
	}
	return wr
}

// close ends an SSE response: cleanly (the terminating chunk) when the
// server ended it, then the connection.
func (w *wire) close(reason int32) {
	if w.Conn == nil {
		return
	}
	if w.unwatch != nil {
		w.unwatch()
	}
	if w.chunked && (reason == stopKill || reason == stopShutdown) {
		_, _ = w.Write([]byte("0\r\n\r\n"))
	}
	_ = w.Conn.Close()
}

// appendWSHeader appends the header of an unmasked final text frame of n
// bytes (RFC 6455 §5.2), as a server sends it.
func appendWSHeader(dst []byte, n int) []byte {
	switch {
	case n < 126:
		return append(dst, 0x81, byte(n))
	case n < 1<<16:
		return append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0x81, 127), uint64(n))
	}
}

// ws writes every frame of the batch as its own text message, in one writev.
func (w *wire) ws(o *outBatch) error {
	w.wsIOV(o)
	return o.send(w)
}

// wsIOV lays out every frame of the batch as its own text message in
// o.iov, for one writev.
func (w *wire) wsIOV(o *outBatch) {
	n := o.Len()
	o.hdr = o.hdr[:0]
	for i := 0; i < n; i++ {
		o.hdr = appendWSHeader(o.hdr, len(o.Frame(i)))
	}
	iov, at := o.iov[:0], 0
	for i := 0; i < n; i++ {
		f := o.Frame(i)
		size := 2
		if len(f) >= 1<<16 {
			size = 10
		} else if len(f) >= 126 {
			size = 4
		}
		iov = append(iov, o.hdr[at:at+size], f)
		at += size
	}
	o.iov = iov
}

// text writes one text message (errors and the gap event on a WebSocket).
func (w *wire) text(p []byte) error {
	bufs := net.Buffers{appendWSHeader(nil, len(p)), p}
	return w.writev(&bufs)
}

// outBatch is a drain buffer and the scratch space to write it, shared
// through a pool: a connection holds one only while it drains and writes,
// so idle connections cost no buffer.
type outBatch struct {
	*evroute.Batch
	hdr  []byte          // chunk or frame headers
	iov  net.Buffers     // what one writev sends
	vecs []syscall.Iovec // iov for a raw writev (tryWritev)

	rawWrite func(fd uintptr) // writevRaw, made once
	wrote    int              // its result
	errno    syscall.Errno
}

// send writes o.iov in one writev without allocating (a net.Buffers that
// is not already on the heap escapes to it in WriteTo, once per write);
// o.iov keeps its array, which WriteTo's consuming would cut short.
func (o *outBatch) send(w *wire) error {
	full := o.iov
	err := w.writev(&o.iov)
	o.iov = full[:0]
	return err
}

func (h *Handler) getBatch() *outBatch {
	if o, ok := h.batches.Get().(*outBatch); ok {
		return o
	}
	return &outBatch{Batch: evroute.NewBatch(h.opts.BatchBytes, 0)}
}
