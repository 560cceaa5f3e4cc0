package streaming

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/gobwas/ws"
)

// A batch written by the wire reaches a real WebSocket client as one text
// message per frame, for every header length class (7-bit, 16-bit and
// 64-bit lengths), while the reader's ping and close share the connection.
func TestWireWritesABatchAsMessages(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 70000}
	var frames [][]byte
	batch := &evroute.Batch{}
	for i, n := range sizes {
		f := bytes.Repeat([]byte{byte('a' + i)}, n)
		frames = append(frames, f)
		batch.Buf = append(batch.Buf, f...)
		batch.Ends = append(batch.Ends, len(batch.Buf))
	}
	wrote := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wr, _, err := upgrade(w, r, 5*time.Second)
		if err != nil {
			wrote <- err
			return
		}
		defer wr.Close()
		read := make(chan struct{})
		go func() { // takes the client's pong and close
			defer close(read)
			_, _ = io.Copy(io.Discard, wr.Conn)
		}()
		s := &wsSession{wire: wr}
		err = wr.ws(&outBatch{Batch: batch})
		if err == nil {
			err = wr.text([]byte(`{"error":"x"}`))
		}
		if err == nil { // the reader's control frames on the same wire
			_, err = wr.Write(pingFrame)
		}
		wrote <- err
		s.close(ws.StatusGoingAway, "")
		<-read
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	cl.SetReadLimit(1 << 20)
	for i, want := range append(frames, []byte(`{"error":"x"}`)) {
		typ, got, err := cl.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.MessageText || !bytes.Equal(got, want) {
			t.Fatalf("message %d: type %v, %d bytes, want %d", i, typ, len(got), len(want))
		}
	}
	_, _, err = cl.Read(ctx) // answers the ping, then sees the close
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		t.Fatalf("close: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// Writing a batch as an SSE chunk or as WebSocket messages allocates
// nothing once the pooled batch has its scratch space: at 100k deliveries/s
// a few words per write kept the server's collector busy.
func TestWireWritesWithoutAllocating(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &wire{Conn: c, timeout: time.Minute, chunked: true}
	frame := []byte("event: update\ndata: {}\n\n")
	o := &outBatch{Batch: &evroute.Batch{Buf: append(frame, frame...), Ends: []int{len(frame), 2 * len(frame)}}}
	writes := map[string]func() error{
		"sse": func() error { return w.sse(o.Buf, o) },
		"ws":  func() error { return w.ws(o) },
	}
	if raw := rawConn(w); raw != nil {
		writes["raw"] = func() error { // a writer's path: laid out, then a writev that never waits
			w.sseIOV(o.Buf, o)
			if err := tryWritev(raw, o); err != nil || len(o.iov) > 0 {
				return fmt.Errorf("tryWritev: %v, %d buffers left", err, len(o.iov))
			}
			return nil
		}
	}
	for name, write := range writes {
		if err := write(); err != nil { // the scratch space grows once
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() {
			if err := write(); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %.1f allocations per write", name, n)
		}
	}
}
