package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

type lineList struct{ lines []string }

func (l *lineList) line(b []byte) { l.lines = append(l.lines, string(b)) }

// sseLines is a random SSE stream's lines: comments, events and data lines
// from empty to longer than a read.
func sseLines(r *rand.Rand) []string {
	var lines []string
	for i := r.Intn(40); i > 0; i-- {
		switch r.Intn(4) {
		case 0:
			lines = append(lines, ":thump")
		case 1:
			lines = append(lines, "event: update")
		case 2:
			lines = append(lines, "")
		default:
			lines = append(lines, "data: "+strings.Repeat("x;\r0", r.Intn(3000)))
		}
	}
	return lines
}

// chunked encodes b as HTTP/1.1 chunks of random sizes (some with an
// extension) through net/http's own writer.
func chunked(r *rand.Rand, b []byte) []byte {
	var out bytes.Buffer
	w := httputil.NewChunkedWriter(&out)
	for len(b) > 0 {
		n := min(len(b), 1+r.Intn(5000))
		_, _ = w.Write(b[:n])
		b = b[n:]
	}
	enc := out.Bytes()
	if r.Intn(2) == 0 { // an extension on the first size line
		if i := bytes.IndexByte(enc, '\r'); i > 0 {
			enc = append(append(append([]byte{}, enc[:i]...), ";ext=1"...), enc[i:]...)
		}
	}
	return enc
}

// The parser yields the stream's lines whatever the chunking and the
// reads' boundaries (the model: the lines as written).
func TestSSEParserModel(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for iter := 0; iter < 500; iter++ {
		want := sseLines(r)
		raw := []byte(strings.Join(append(want, ""), "\n")) // every line ends in \n
		p := sseParser{chunked: iter%2 == 0}
		wire := raw
		if p.chunked {
			wire = chunked(r, raw)
		}
		var got lineList
		for len(wire) > 0 {
			n := min(len(wire), 1+r.Intn(9000))
			if err := p.feed(wire[:n], &got); err != nil {
				t.Fatalf("iteration %d: %v", iter, err)
			}
			wire = wire[n:]
		}
		if fmt.Sprint(got.lines) != fmt.Sprint(want) {
			t.Fatalf("iteration %d (chunked %v): %d lines, want %d", iter, p.chunked, len(got.lines), len(want))
		}
	}
}

func TestSSEParserChunkErrors(t *testing.T) {
	var l lineList
	p := sseParser{chunked: true}
	if err := p.feed([]byte("3\r\n:)\n\r\n0\r\n\r\n"), &l); !errors.Is(err, errStreamEnd) || len(l.lines) != 1 {
		t.Fatalf("last chunk: %v %q", err, l.lines)
	}
	p = sseParser{chunked: true}
	if err := p.feed([]byte("zz\r\n"), &l); err == nil || !strings.Contains(err.Error(), `bad chunk size "zz"`) {
		t.Fatalf("bad size: %v", err)
	}
}

// statusID finds the event number in an SSE data line and in a WebSocket
// message (where the payload is an escaped string).
func TestStatusID(t *testing.T) {
	tpl := messageTemplate()
	msg := message(tpl, 4711)
	payload := msg[bytes.Index(msg, []byte(`"payload":`))+len(`"payload":`) : bytes.LastIndex(msg, []byte(`,"queued_at"`))]
	sse := append([]byte("data: "), payload...)
	quoted := fmt.Sprintf(`{"stream":["public"],"event":"update","payload":%q}`, payload)
	for _, frame := range [][]byte{sse, []byte(quoted)} {
		if n, ok := statusID(frame); !ok || n != 4711 {
			t.Fatalf("%d %v in %.80s", n, ok, frame)
		}
	}
	if _, ok := statusID([]byte(`data: {"id":"x"}`)); ok {
		t.Fatal("a frame without an event number")
	}
}

// wsMessages is what the parser handed out.
type wsMessages struct{ got [][]byte }

func (m *wsMessages) line(b []byte) { m.got = append(m.got, append([]byte(nil), b...)) }

// The WebSocket client (handshake and parser) against gorilla/websocket's
// server: messages of every length class, fragmented by a small write
// buffer, pings between them (answered: the server counts the pongs), read
// in reads of random sizes; the model is the list of messages sent.
func TestWSParserAgainstGorilla(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	var want [][]byte
	for _, n := range []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 70000} {
		want = append(want, bytes.Repeat([]byte{byte('a' + r.Intn(26))}, n))
	}
	for i := 0; i < 200; i++ {
		want = append(want, bytes.Repeat([]byte{byte('a' + r.Intn(26))}, r.Intn(5000)))
	}
	const pings = 20
	pongs := make(chan string, pings)
	up := websocket.Upgrader{WriteBufferSize: 700, Subprotocols: []string{"benchtok7"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		for i, m := range want {
			if i%(len(want)/pings) == 0 && i/(len(want)/pings) < pings {
				_ = ws.WriteControl(websocket.PingMessage, []byte(fmt.Sprint("p", i)), time.Now().Add(time.Second))
			}
			w, err := ws.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			_, _ = w.Write(m)
			_ = w.Close()
		}
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		time.Sleep(time.Second) // until the pongs are read
	}))
	defer srv.Close()
	g := &loadgen{base: srv.URL, stream: "public", firstToken: 7}
	c, err := g.dialWS(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	p := c.p.(*wsParser)
	p.reply = func(b []byte) error { _, err := c.conn.Write(b); return err }
	var got wsMessages
	err = p.feed(c.pending, &got)
	buf := make([]byte, 9000)
	for err == nil {
		var n int
		n, err = c.conn.Read(buf[:1+r.Intn(len(buf)-1)])
		if n > 0 {
			if ferr := p.feed(buf[:n], &got); ferr != nil {
				err = ferr
			}
		}
	}
	if !errors.Is(err, errStreamEnd) {
		t.Fatalf("ended with %v after %d messages", err, len(got.got))
	}
	if len(got.got) != len(want) {
		t.Fatalf("%d messages, want %d", len(got.got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got.got[i], want[i]) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got.got[i]), len(want[i]))
		}
	}
	for i := 0; i < pings; i++ {
		select {
		case <-pongs:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d pongs of %d", i, pings)
		}
	}
}

func TestWSParserFrames(t *testing.T) {
	var m wsMessages
	// A 64-bit length (gorilla's writer above never sends one over its
	// buffer size), its header split in two reads.
	big := bytes.Repeat([]byte("x"), 70000)
	frame := append(binary.BigEndian.AppendUint64([]byte{0x81, 127}, uint64(len(big))), big...)
	p := &wsParser{}
	for _, part := range [][]byte{frame[:5], frame[5:]} {
		if err := p.feed(part, &m); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.got) != 1 || !bytes.Equal(m.got[0], big) {
		t.Fatalf("%d messages", len(m.got))
	}
	if err := (&wsParser{}).feed([]byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, &m); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Fatalf("masked: %v", err)
	}
	huge := binary.BigEndian.AppendUint64([]byte{0x81, 127}, 1<<40)
	if err := (&wsParser{}).feed(huge, &m); err == nil || !strings.Contains(err.Error(), "message over") {
		t.Fatalf("huge: %v", err)
	}
}

// TestPacedReplies: the paced publisher counts PUBLISH's integer replies
// however the reads split them, and stops at anything else.
func TestPacedReplies(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for round := 0; round < 200; round++ {
		var all []byte
		want := rng.Intn(50)
		for i := 0; i < want; i++ {
			all = fmt.Appendf(all, ":%d\r\n", rng.Intn(100000))
		}
		p := &pacedPublisher{}
		for rest := all; len(rest) > 0; {
			n := 1 + rng.Intn(min(len(rest), 9))
			if err := p.count(rest[:n]); err != nil {
				t.Fatalf("%q: %v", all, err)
			}
			rest = rest[n:]
		}
		if p.replies != int64(want) || p.midLine {
			t.Fatalf("%q: %d replies (mid-line %v), want %d", all, p.replies, p.midLine, want)
		}
	}
	p := &pacedPublisher{}
	if err := p.count([]byte(":1\r\n:2\r")); err != nil || p.replies != 1 {
		t.Fatalf("%v, %d", err, p.replies)
	}
	if err := p.count([]byte("\n-ERR wrong type\r\n")); err == nil || !strings.Contains(err.Error(), "ERR wrong type") || p.replies != 2 {
		t.Fatalf("an error reply: %v, %d", err, p.replies)
	}
}
