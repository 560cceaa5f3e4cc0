package streaming

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// wsClient is a WebSocket client by hand, so that a test decides how its
// frames reach the server: masked as a client must (or not), fragmented,
// and in as many TCP writes as it likes.
type wsClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dialWS upgrades a connection with the token as subprotocol; early is
// written in the same write as the handshake.
func dialWS(t *testing.T, f *fixture, query string, early []byte) *wsClient {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /api/v1/streaming/?" + query + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: alice\r\n\r\n"
	if _, err := c.Write(append([]byte(req), early...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Protocol") != "alice" {
		t.Fatalf("upgrade: %s %v", resp.Status, resp.Header)
	}
	return &wsClient{t, c, br}
}

// frame is f as a client sends it: masked, unless unmasked is asked for.
func clientFrame(t *testing.T, f ws.Frame, masked bool) []byte {
	t.Helper()
	if masked {
		f = ws.MaskFrameInPlace(f)
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send writes bytes in pieces of at most chunk bytes, pausing between
// them, so that the server sees a frame come in parts.
func (w *wsClient) send(b []byte, chunk int) {
	w.t.Helper()
	for len(b) > 0 {
		n := min(chunk, len(b))
		if _, err := w.c.Write(b[:n]); err != nil {
			w.t.Fatal(err)
		}
		b = b[n:]
		if len(b) > 0 {
			time.Sleep(30 * time.Millisecond)
		}
	}
}

func (w *wsClient) read() ws.Frame {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(w.br)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

// expectClose reads the server's close frame, answers it when reply is
// set (the server waits for the answer), and reads the end of the
// connection. Without a reply the server may reset the connection: it
// failed it (RFC 6455 §7.1.7), with the client's bytes unread.
func (w *wsClient) expectClose(code ws.StatusCode, reason string, reply bool) {
	w.t.Helper()
	f := w.read()
	got, why := ws.ParseCloseFrameData(f.Payload)
	if f.Header.OpCode != ws.OpClose || got != code || (reason != "" && why != reason) {
		w.t.Fatalf("got opcode %v, code %d %q; want close %d %q", f.Header.OpCode, got, why, code, reason)
	}
	if !reply {
		if _, err := io.ReadAll(w.br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			w.t.Fatalf("after the close: %v", err)
		}
		return
	}
	w.send(clientFrame(w.t, ws.NewCloseFrame(f.Payload[:2]), true), 64)
	if _, err := io.ReadAll(w.br); err != nil {
		w.t.Fatalf("after the close: %v", err)
	}
}

// The reader parks between messages (no goroutine per idle WebSocket) and
// handles what comes whole or in pieces: a ping split across TCP writes, a
// fragmented message with a ping between its fragments, a message sent
// with the handshake, and ends on a close, a binary message, an unmasked
// frame and a message over the limit, each with the close code of RFC 6455
// (binary: Mastodon's 1003 and reason).
func TestWebSocketReader(t *testing.T) {
	f := newFixture(t)
	before := runtime.NumGoroutine()
	const n = 10
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, f, "stream=public", nil)
	}
	if g := settle(before + 2); g > before+2 {
		t.Fatalf("%d idle WebSockets hold %d goroutines", n, g-before)
	}
	w := clients[0]

	// A ping in three parts, 30 ms apart, to a parked reader.
	w.send(clientFrame(t, ws.NewPingFrame([]byte("hello")), true), 3)
	if fr := w.read(); fr.Header.OpCode != ws.OpPong || string(fr.Payload) != "hello" {
		t.Fatalf("got %v %q, want the pong", fr.Header.OpCode, fr.Payload)
	}
	// A message in two fragments with a ping between them, each in parts.
	first := ws.NewFrame(ws.OpText, false, []byte(`{"type":"subscri`))
	last := ws.NewFrame(ws.OpContinuation, true, []byte(`be","stream":"hashtag"}`))
	w.send(clientFrame(t, first, true), 5)
	w.send(clientFrame(t, ws.NewPingFrame([]byte("mid")), true), 2)
	w.send(clientFrame(t, last, true), 7)
	if fr := w.read(); fr.Header.OpCode != ws.OpPong || string(fr.Payload) != "mid" {
		t.Fatalf("got %v %q, want the pong", fr.Header.OpCode, fr.Payload)
	}
	if fr := w.read(); string(fr.Payload) != `{"error":"Missing tag name parameter","status":400}` {
		t.Fatalf("got %q", fr.Payload)
	}
	// A subscription one byte per write, then an event on it.
	w.send(clientFrame(t, ws.NewTextFrame([]byte(`{"type":"subscribe","stream":"hashtag","tag":"rust"}`)), true), 1)
	// Its pong shows the subscription was handled: the reader takes frames
	// in order.
	w.send(clientFrame(t, ws.NewPingFrame(nil), true), 64)
	if fr := w.read(); fr.Header.OpCode != ws.OpPong {
		t.Fatalf("got %v, want the pong", fr.Header.OpCode)
	}
	if g := settle(before + 2); g > before+2 {
		t.Fatalf("after their messages, %d WebSockets hold %d goroutines", n, g-before)
	}
	if _, err := f.eng.PublishChannel("timeline:hashtag:rust", []byte(`{"event":"delete","payload":"9"}`)); err != nil {
		t.Fatal(err)
	}
	if fr := w.read(); string(fr.Payload) != `{"stream":["hashtag","rust"],"event":"delete","payload":"9"}` {
		t.Fatalf("got %q", fr.Payload)
	}
	// A pong the server did not ask for is allowed.
	w.send(clientFrame(t, ws.NewPongFrame(nil), true), 64)

	// A message in the handshake's write is read first.
	early := clientFrame(t, ws.NewTextFrame([]byte(`{"type":"subscribe","stream":"nope"}`)), true)
	e := dialWS(t, f, "stream=public", early)
	if fr := e.read(); string(fr.Payload) != `{"error":"Unknown stream type","status":400}` {
		t.Fatalf("got %q", fr.Payload)
	}

	// The client closes: the server answers with the same code and ends.
	clients[1].send(clientFrame(t, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")), true), 3)
	if fr := clients[1].read(); fr.Header.OpCode != ws.OpClose {
		t.Fatalf("got %v, want the close reply", fr.Header.OpCode)
	} else if code, _ := ws.ParseCloseFrameData(fr.Payload); code != ws.StatusNormalClosure {
		t.Fatalf("close reply %d", code)
	}
	if _, err := io.ReadAll(clients[1].br); err != nil {
		t.Fatal(err)
	}
	// An empty close (no code) is answered with an empty one.
	clients[6].send(clientFrame(t, ws.NewCloseFrame(nil), true), 64)
	if fr := clients[6].read(); fr.Header.OpCode != ws.OpClose || len(fr.Payload) != 0 {
		t.Fatalf("got %v %q, want an empty close", fr.Header.OpCode, fr.Payload)
	}
	// A close with a code no endpoint may send is a protocol error.
	clients[7].send(clientFrame(t, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNoStatusRcvd, "")), true), 64)
	clients[7].expectClose(ws.StatusProtocolError, "", false)
	clients[2].send(clientFrame(t, ws.NewBinaryFrame([]byte{1, 2}), true), 64)
	clients[2].expectClose(ws.StatusUnsupportedData, "The mastodon streaming server does not support binary messages", true)
	clients[3].send(clientFrame(t, ws.NewTextFrame([]byte(`{}`)), false), 64)
	clients[3].expectClose(ws.StatusProtocolError, "", false)
	clients[4].send(clientFrame(t, ws.NewTextFrame([]byte(strings.Repeat(" ", wsReadLimit+1))), true), 1<<20)
	clients[4].expectClose(ws.StatusMessageTooBig, "", false)
	clients[5].send(clientFrame(t, ws.NewTextFrame([]byte{'"', 0xff, '"'}), true), 64)
	clients[5].expectClose(ws.StatusInvalidFramePayloadData, "", false)

	// The rest go away; every connection ends.
	for _, c := range append(clients, e) {
		c.c.Close()
	}
	f.waitConnectionsGone(t, 3*time.Second, "WebSockets outlived their clients")
}
