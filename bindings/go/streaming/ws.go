package streaming

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
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

// wsSession is one WebSocket. Its reader holds no goroutine while the
// client is silent (most of a connection's life: a client sends its
// subscriptions, then only pongs): the socket waits in the process's watch
// set, and input starts a goroutine that reads and handles what came, then
// parks again once nothing is left buffered. A frame or message that comes
// in pieces is read on that goroutine until it is whole. Frames are read
// with gobwas/ws's low-level reader, which exists for this use; the writers
// (writer.go) write the server's messages on the wire.
type wsSession struct {
	h        *Handler
	c        *conn
	wire     *wire       // every frame the server sends
	pinged   bool        // a ping is waiting for its pong (the stream's tick)
	pong     atomic.Bool // a pong came since the last ping
	closing  atomic.Bool // a close frame was sent: the reader waits for the reply
	readDone chan struct{}

	src    wsSource
	watch  *readWatch  // nil: the reader keeps its goroutine
	parked atomic.Bool // the reader waits in the watch set
	ending atomic.Bool // finish runs: the reader no longer parks
}

// wsSource is what the reader reads: bytes the client sent right after
// its handshake (taken with it), then the connection.
type wsSource struct {
	early []byte
	conn  net.Conn
}

func (s *wsSource) Read(p []byte) (int, error) {
	if len(s.early) > 0 {
		n := copy(p, s.early)
		s.early = s.early[n:]
		return n, nil
	}
	return s.conn.Read(p)
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
	res, err := s.h.resolve(context.Background(), s.c.id, req)
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
	res, err := s.h.resolve(context.Background(), s.c.id, req)
	if err == nil {
		err = s.c.unsubscribe(res)
	}
	if err != nil {
		s.sendError(&httpError{http.StatusBadRequest, "Error unsubscribing from channel"}, false)
	}
}

// wsReadBuffer is the reader's buffer, held only while it runs: client
// messages are small, and a longer one is read through it.
const wsReadBuffer = 512

var wsReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, wsReadBuffer) }}

// read handles the client's frames until none is left buffered (it parks)
// or the connection ends.
func (s *wsSession) read() {
	br := wsReaders.Get().(*bufio.Reader)
	br.Reset(&s.src)
	defer func() {
		br.Reset(nil)
		wsReaders.Put(br)
	}()
	for {
		if err := s.readMessage(br); err != nil {
			if s.watch != nil {
				s.watch.remove()
			}
			s.c.stop(stopGone)
			close(s.readDone)
			return
		}
		if br.Buffered() == 0 && len(s.src.early) == 0 && s.park() {
			return
		}
	}
}

// park leaves the reader to the watch set; false when the caller must go
// on reading (the socket cannot be watched, or the connection ends).
func (s *wsSession) park() bool {
	if s.watch == nil {
		return false
	}
	s.parked.Store(true)
	// Armed last: input already waiting fires at once.
	if s.ending.Load() || s.watch.arm() != nil {
		// Unless a wakeup or finish took the reader over meanwhile.
		return !s.parked.CompareAndSwap(true, false)
	}
	return true
}

// wake is the watch set's call: input came for a parked reader.
func (s *wsSession) wake() {
	if s.parked.CompareAndSwap(true, false) {
		go s.read()
	}
}

// errClientClosed ends the reader at the client's close frame.
var errClientClosed = errors.New("websocket: closed by the client")

// readMessage reads frames up to and with the client's next message and
// handles them; an error ends the connection (after a close frame telling
// the client why, when it broke the protocol or a limit).
func (s *wsSession) readMessage(br *bufio.Reader) error {
	rd := wsutil.Reader{Source: br, State: ws.StateServerSide, CheckUTF8: true,
		MaxFrameSize: wsReadLimit, OnIntermediate: s.control}
	hdr, err := rd.NextFrame()
	if err != nil {
		return s.readFailed(err)
	}
	if hdr.OpCode.IsControl() {
		return s.control(hdr, &rd)
	}
	if s.closing.Load() || hdr.OpCode == ws.OpBinary {
		// Until the client's close frame, messages are not handled.
		if err := rd.Discard(); err != nil {
			return s.readFailed(err)
		}
		if hdr.OpCode == ws.OpBinary {
			s.close(ws.StatusUnsupportedData, "The mastodon streaming server does not support binary messages")
			s.c.stop(stopGone)
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(&rd, wsReadLimit+1))
	if err == nil && len(data) > wsReadLimit {
		err = wsutil.ErrFrameTooLarge
	}
	if err != nil {
		return s.readFailed(err)
	}
	var msg clientMessage
	if json.Unmarshal(data, &msg) != nil {
		return nil // invalid JSON is ignored, as in Mastodon
	}
	req := streamRequest{Stream: param(msg.Stream), Tag: param(msg.Tag), List: param(msg.List)}
	switch msg.Type {
	case "subscribe":
		s.subscribe(req, msg.LastEventID)
	case "unsubscribe":
		s.unsubscribe(req)
	}
	return nil
}

// readFailed tells the client which rule it broke, if it did, and returns
// err.
func (s *wsSession) readFailed(err error) error {
	var pe ws.ProtocolError
	switch {
	case errors.Is(err, wsutil.ErrFrameTooLarge):
		s.close(ws.StatusMessageTooBig, "")
	case errors.Is(err, wsutil.ErrInvalidUTF8):
		s.close(ws.StatusInvalidFramePayloadData, "")
	case errors.As(err, &pe):
		s.close(ws.StatusProtocolError, pe.Error())
	}
	return err
}

// control handles a control frame, alone or between the frames of a
// message: a ping is answered, a pong noted, a close answered (unless the
// server sent its own first) and the reader ended.
func (s *wsSession) control(hdr ws.Header, payload io.Reader) error {
	var buf [125]byte // a control frame's most (checked by the reader)
	p := buf[:hdr.Length]
	if _, err := io.ReadFull(payload, p); err != nil {
		return err
	}
	switch hdr.OpCode {
	case ws.OpPing:
		if !s.closing.Load() {
			return s.writeFrame(ws.NewPongFrame(p))
		}
	case ws.OpPong:
		s.pong.Store(true)
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p) // code 0: none (an empty close is valid)
		if err := ws.CheckCloseFrameData(code, reason); err != nil && len(p) > 0 {
			s.close(ws.StatusProtocolError, err.Error())
			return err
		}
		if s.closing.CompareAndSwap(false, true) {
			// The code echoed, as is usual (RFC 6455 §5.5.1).
			var body []byte
			if code != 0 {
				body = ws.NewCloseFrameBody(code, "")
			}
			_ = s.writeFrame(ws.NewCloseFrame(body))
		}
		return errClientClosed
	}
	return nil
}

// writeFrame writes a control frame in one Write: the writers' writes cannot
// come between its header and payload.
func (s *wsSession) writeFrame(f ws.Frame) error {
	b, err := ws.CompileFrame(f)
	if err == nil {
		_, err = s.wire.Write(b)
	}
	return err
}

// close sends a close frame; the reader then waits for the client's.
func (s *wsSession) close(code ws.StatusCode, reason string) {
	if s.closing.CompareAndSwap(false, true) {
		_ = s.writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
	}
}

// pingFrame is an empty ping, compiled once.
var pingFrame = ws.MustCompileFrame(ws.NewPingFrame(nil))

// ping is the stream's tick: a ping gets until the next one to be answered;
// a client that did not answer is closed.
func (s *wsSession) ping() bool {
	if s.pinged && !s.pong.Load() {
		s.c.stop(stopTimeout)
		return true
	}
	s.pinged = true
	s.pong.Store(false)
	_, err := s.wire.Write(pingFrame)
	return err == nil
}

// hijackWire hands the upgrade a wire instead of the raw connection, so
// that the writers can write batches of messages on it while the reader
// writes control frames (each in one Write).
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

// wsReadLimit is the largest client message (close 1009 beyond).
const wsReadLimit = 32 << 10

// closeWait bounds the wait for the client's close frame.
const closeWait = 5 * time.Second

// upgrade completes the handshake on a hijacked wire, with the token as
// subprotocol when it came as one (Mastodon's web UI); the response also
// carries the headers set on w. On an error the client has its answer and
// the wire is closed.
func upgrade(w http.ResponseWriter, r *http.Request, timeout time.Duration) (*wire, []byte, error) {
	up := ws.HTTPUpgrader{Header: w.Header()}
	if token, fromProtocol := tokenFrom(r); fromProtocol {
		up.Protocol = func(p string) bool { return p == token }
	}
	hw := &hijackWire{ResponseWriter: w, timeout: timeout}
	_, brw, _, err := up.Upgrade(r, hw)
	if err != nil {
		if hw.wire != nil {
			_ = hw.wire.Close()
		}
		return nil, nil, err
	}
	// What the client sent right after its handshake is the reader's first
	// input; the hijacked buffer (net/http's 4 kB) is not kept.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		early = append(early, b...)
	}
	return hw.wire, early, nil
}

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
	wr, early, err := upgrade(w, r, h.opts.WriteTimeout)
	if err != nil {
		return // the upgrade answered the client
	}
	c, err := h.open(id, acct, "websocket")
	if err != nil {
		h.log.Error("subscriber failed", "err", err)
		_ = (&wsSession{wire: wr}).writeFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusInternalServerError, "")))
		_ = wr.Close()
		return
	}
	s := &wsSession{h: h, c: c, wire: wr, readDone: make(chan struct{}), src: wsSource{early: early, conn: wr.Conn}}
	q := r.URL.Query()
	first := streamRequest{Stream: q.Get("stream"), Tag: q.Get("tag"), List: q.Get("list")}
	// The connection goes on in a goroutine of its own, so that net/http's
	// goroutine (its stack grown by authentication and the viewer state's
	// load), buffers and request state are released.
	end := finish
	finish = nil
	go s.run(first, q.Get("last_event_id"), end)
}

// run makes the initial subscription (and a resume) before the writer
// starts, so that a gap event comes before the replayed frames, parks the
// reader until the client sends something, and runs the writer.
func (s *wsSession) run(first streamRequest, lastID string, end func()) {
	if first.Stream != "" {
		s.subscribe(first, lastID)
	}
	if s.watch = watchReads(s.wire.Conn, s.wake); len(s.src.early) > 0 || !s.park() {
		go s.read()
	}
	c := s.c
	s.h.stream(c, s.wire, true, s.h.opts.PingInterval, s.ping, func() {
		s.finish()
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
		s.close(ws.StatusGoingAway, "")
	case stopKill:
		s.close(ws.StatusNormalClosure, "")
	}
	// After a close frame the client gets a while to answer; otherwise
	// (it went away or stayed silent) the connection ends now.
	wait := time.Now()
	if s.closing.Load() {
		wait = wait.Add(closeWait)
	}
	_ = s.wire.SetReadDeadline(wait)
	s.ending.Store(true)
	if s.parked.CompareAndSwap(true, false) {
		s.read() // until the client's close frame or the deadline
	}
	<-s.readDone
	_ = s.wire.Close()
}
