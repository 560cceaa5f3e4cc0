package streaming

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// refuseUpgrade answers a refused WebSocket upgrade the way Mastodon writes
// it on the raw socket.
func refuseUpgrade(w http.ResponseWriter, reqID string, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = errUnexpected
	}
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\n"+
		"Content-Length: 0\r\nX-Request-Id: %s\r\nX-Error-Message: %s\r\n\r\n",
		he.status, http.StatusText(he.status), reqID, he.message)
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("X-Error-Message", he.message)
		w.Header().Set("Connection", "close")
		w.WriteHeader(he.status)
		return
	}
	netConn, brw, hjErr := hj.Hijack()
	if hjErr != nil {
		return
	}
	defer netConn.Close()
	_ = netConn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = brw.WriteString(resp)
	_ = brw.Flush()
}

// clientMessage is the web UI's multiplexing message.
type clientMessage struct {
	Type        string          `json:"type"`
	Stream      json.RawMessage `json:"stream"`
	Tag         json.RawMessage `json:"tag"`
	List        json.RawMessage `json:"list"`
	LastEventID string          `json:"last_event_id"`
}

// param reads a string or number parameter; an array gives its first
// element (Mastodon's firstParam).
func param(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	if arr, ok := v.([]any); ok {
		if len(arr) == 0 {
			return ""
		}
		v = arr[0]
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return ""
}

type wsSession struct {
	h        *Handler
	c        *conn
	ws       *websocket.Conn // handshake, reads, control frames
	wire     *wire           // every text message
	ctx      context.Context
	pinged   bool        // a ping is waiting for its pong (the pump's)
	pong     atomic.Bool // a pong came since the last ping
	closing  atomic.Bool // a close frame was sent: the reader waits for the reply
	readDone chan struct{}
}

func (s *wsSession) sendError(err error, withStatus bool) {
	var he *httpError
	if !errors.As(err, &he) {
		he = errUnexpected
	}
	msg := map[string]any{"error": he.message}
	if withStatus {
		msg["status"] = he.status
	}
	raw, _ := json.Marshal(msg)
	_ = s.wire.text(raw)
}

// subscribe adds a subscription; with lastID it then resumes the
// connection (evroute's addition) and tells the client of a gap.
func (s *wsSession) subscribe(req streamRequest, lastID string) {
	res, err := s.h.resolve(s.ctx, s.c.id, req)
	if err == nil {
		err = s.c.subscribe(res)
	}
	if err != nil {
		s.sendError(err, true)
		return
	}
	if s.h.opts.Synced != nil {
		s.h.opts.Synced()
	}
	if s.h.resume(s.c, lastID) {
		stream := []string{res.sub.Stream}
		if p := res.sub.Tag + res.sub.List; p != "" {
			stream = append(stream, p)
		}
		raw, _ := json.Marshal(map[string]any{"stream": stream, "event": "evroute.gap", "payload": lastID})
		_ = s.wire.text(raw)
	}
}

func (s *wsSession) unsubscribe(req streamRequest) {
	res, err := s.h.resolve(s.ctx, s.c.id, req)
	if err == nil {
		err = s.c.unsubscribe(res)
	}
	if err != nil {
		s.sendError(&httpError{http.StatusBadRequest, "Error unsubscribing from channel"}, false)
	}
}

// readLoop handles the client's messages until the connection ends.
func (s *wsSession) readLoop() {
	defer close(s.readDone)
	for {
		typ, data, err := s.ws.ReadMessage()
		if err != nil {
			s.c.stop(stopGone)
			return
		}
		if s.closing.Load() {
			continue // until the client's close frame
		}
		if typ == websocket.BinaryMessage {
			s.close(websocket.CloseUnsupportedData, "The mastodon streaming server does not support binary messages")
			s.c.stop(stopGone)
			continue
		}
		var msg clientMessage
		if json.Unmarshal(data, &msg) != nil {
			continue // invalid JSON is ignored, as in Mastodon
		}
		req := streamRequest{Stream: param(msg.Stream), Tag: param(msg.Tag), List: param(msg.List)}
		switch msg.Type {
		case "subscribe":
			s.subscribe(req, msg.LastEventID)
		case "unsubscribe":
			s.unsubscribe(req)
		}
	}
}

// close sends a close frame; the reader then waits for the client's.
func (s *wsSession) close(code int, reason string) {
	if s.closing.CompareAndSwap(false, true) {
		_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(s.h.opts.WriteTimeout))
	}
}

// ping is the pump's tick: a ping gets until the next one to be answered;
// a client that did not answer is closed.
func (s *wsSession) ping() bool {
	if s.pinged && !s.pong.Load() {
		s.c.stop(stopTimeout)
		return true
	}
	s.pinged = true
	s.pong.Store(false)
	return s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.h.opts.WriteTimeout)) == nil
}

// hijackWire hands the WebSocket module a wire instead of the raw
// connection, so that the pump can write batches of messages on it while
// the module keeps the handshake, reads and control frames (each written
// in one Write).
type hijackWire struct {
	http.ResponseWriter
	timeout time.Duration
	wire    *wire
}

func (hw *hijackWire) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(hw.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	hw.wire = &wire{Conn: nc, timeout: hw.timeout}
	return hw.wire, brw, nil
}

// wsUpgrader keeps no buffer per idle connection: client messages are
// read through 512 bytes (they are small; control frames fit), and the
// write buffer pool is never drawn from (the wire writes every message).
var wsUpgrader = websocket.Upgrader{
	ReadBufferSize:  512,
	WriteBufferPool: &sync.Pool{},
	CheckOrigin:     func(*http.Request) bool { return true }, // as Mastodon: tokens, not cookies
}

// wsReadLimit is the largest client message (close 1009 beyond).
const wsReadLimit = 32 << 10

// closeWait bounds the wait for the client's close frame.
const closeWait = 5 * time.Second

// serveWebSocket authenticates before the upgrade (a refusal is a raw HTTP
// response), then starts the reader and the writer of one WebSocket.
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, reqID string) {
	if !h.begin() {
		refuseUpgrade(w, reqID, &httpError{http.StatusServiceUnavailable, "Server is shutting down"})
		return
	}
	// finish releases what the connection holds; once it is upgraded, the
	// connection's own goroutine runs it.
	finish := h.wg.Done
	defer func() {
		if finish != nil {
			finish()
		}
	}()
	id, err := h.authenticate(r)
	if err != nil {
		refuseUpgrade(w, reqID, err)
		return
	}
	acct, err := h.accounts.acquire(r.Context(), id.AccountID)
	if err != nil {
		h.log.Error("viewer state load failed", "account", id.AccountID, "err", err)
		refuseUpgrade(w, reqID, errUnexpected)
		return
	}
	done := finish
	finish = func() { h.accounts.release(acct); done() }
	up := wsUpgrader
	if token, fromProtocol := tokenFrom(r); fromProtocol {
		up.Subprotocols = []string{token}
	}
	hw := &hijackWire{ResponseWriter: w, timeout: h.opts.WriteTimeout}
	ws, err := up.Upgrade(hw, r, w.Header())
	if err != nil {
		if hw.wire != nil {
			_ = hw.wire.Close()
		}
		return // Upgrade answered the client
	}
	ws.SetReadLimit(wsReadLimit)
	c, err := h.open(id, acct, "websocket")
	if err != nil {
		h.log.Error("subscriber failed", "err", err)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, ""), time.Now().Add(time.Second))
		_ = hw.wire.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &wsSession{h: h, c: c, ws: ws, wire: hw.wire, ctx: ctx, readDone: make(chan struct{})}
	ws.SetPongHandler(func(string) error { s.pong.Store(true); return nil })
	// The initial subscription, and a resume, before the writer starts: a
	// gap event comes before the replayed frames.
	if q := r.URL.Query(); q.Get("stream") != "" {
		s.subscribe(streamRequest{Stream: q.Get("stream"), Tag: q.Get("tag"), List: q.Get("list")}, q.Get("last_event_id"))
	}
	// The connection goes on in a goroutine of its own, so that net/http's
	// goroutine, buffers and request state are released.
	end := finish
	finish = nil
	go s.readLoop()
	go h.pump(c, s.wire, true, h.opts.PingInterval, s.ping, func() {
		s.finish()
		cancel()
		c.close()
		end()
	})
}

// finish closes the connection, when the writer ended, with the code its
// end calls for.
func (s *wsSession) finish() {
	c := s.c
	switch c.reason.Load() {
	case stopShutdown:
		s.close(websocket.CloseGoingAway, "")
	case stopKill:
		s.close(websocket.CloseNormalClosure, "")
	}
	// After a close frame the client gets a while to answer; otherwise
	// (it went away or stayed silent) the connection ends now.
	wait := time.Now()
	if s.closing.Load() {
		wait = wait.Add(closeWait)
	}
	_ = s.wire.SetReadDeadline(wait)
	<-s.readDone
	_ = s.wire.Close()
}
