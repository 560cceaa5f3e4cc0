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
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	evroute "github.com/evroute/evroute/bindings/go"
)

// fakeStore is an in-memory TokenStore and ViewerStore.
type fakeStore struct {
	mu      sync.Mutex
	tokens  map[string]*Identity
	lists   map[string]string // list id -> owner
	viewers map[string]*Viewer
	loads   int
	down    bool
}

func (f *fakeStore) Authenticate(_ context.Context, token string) (*Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("database down")
	}
	if id := f.tokens[token]; id != nil {
		return id, nil
	}
	return nil, ErrInvalidToken
}

func (f *fakeStore) ListOwned(_ context.Context, account, list string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[list] == account, nil
}

func (f *fakeStore) LoadViewers(_ context.Context, ids []string) (map[string]*Viewer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	out := map[string]*Viewer{}
	for _, id := range ids {
		if v := f.viewers[id]; v != nil {
			cp := *v
			out[id] = &cp
		}
	}
	return out, nil
}

type fakeBus struct {
	mu     sync.Mutex
	listen map[string]int
}

func (b *fakeBus) Listen(ch string)   { b.mu.Lock(); b.listen[ch]++; b.mu.Unlock() }
func (b *fakeBus) Unlisten(ch string) { b.mu.Lock(); b.listen[ch]--; b.mu.Unlock() }

type fixture struct {
	eng   *evroute.Engine
	store *fakeStore
	bus   *fakeBus
	h     *Handler
	srv   *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	eng, err := evroute.NewEngine(evroute.Config{})
	if err != nil {
		t.Fatal(err)
	}
	store := &fakeStore{
		tokens: map[string]*Identity{
			"alice":    {TokenID: "1", AccountID: "10", Scopes: []string{"read"}},
			"statuses": {TokenID: "2", AccountID: "20", Scopes: []string{"read:statuses"}},
			"notifs":   {TokenID: "3", AccountID: "30", Scopes: []string{"read:notifications"}},
			"write":    {TokenID: "4", AccountID: "40", Scopes: []string{"write"}},
		},
		lists:   map[string]string{"7": "10", "8": "20"},
		viewers: map[string]*Viewer{"10": {BlockedAccounts: []string{"666"}}},
	}
	bus := &fakeBus{listen: map[string]int{}}
	h, err := New(Options{Engine: eng, Tokens: store, Viewers: store, System: bus, Heartbeat: 200 * time.Millisecond, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		srv.Close()
		eng.Close()
	})
	return &fixture{eng, store, bus, h, srv}
}

func status(account, id string) []byte {
	raw, _ := json.Marshal(map[string]any{"event": "update", "payload": map[string]any{
		"id": id, "visibility": "public", "language": "en", "content": "<p>hi</p>", "spoiler_text": "",
		"account": map[string]any{"id": account, "acct": "someone"}, "mentions": []any{},
		"media_attachments": []any{}, "tags": []any{}, "reblog": nil,
	}})
	return raw
}

// sse opens a stream and returns a reader positioned after ":)".
// connections is how many connections the handler tracks.
func (f *fixture) connections() int {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	return len(f.h.conns)
}

// waitConnectionsGone fails the test with msg unless every connection has
// ended within timeout.
func (f *fixture) waitConnectionsGone(t *testing.T, timeout time.Duration, msg string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); f.connections() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (%d connections left)", msg, f.connections())
		}
	}
}

func (f *fixture) sse(t *testing.T, path, token string) (*bufio.Reader, func()) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != ":)\n" {
		t.Fatalf("first line %q", line)
	}
	return br, func() { resp.Body.Close() }
}

// nextEvent reads one SSE frame, skipping heartbeats.
func nextEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, b.String())
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		if line == "\n" && b.Len() > 0 {
			return b.String()
		}
		b.WriteString(line)
	}
}

func TestErrorTable(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		path, token string
		status      int
		msg         string
	}{
		{"/api/v1/streaming/nope", "alice", 400, "Unknown channel requested"},
		{"/api/v1/streaming/public", "", 401, "Missing access token"},
		{"/api/v1/streaming/public", "bogus", 401, "Invalid access token"},
		{"/api/v1/streaming/public", "write", 401, "Access token does not have the required scopes"},
		{"/api/v1/streaming/user/notification", "statuses", 401, "Access token does not have the required scopes"},
		{"/api/v1/streaming/public", "notifs", 401, "Access token does not have the required scopes"},
		{"/api/v1/streaming/hashtag", "alice", 400, "Missing tag name parameter"},
		{"/api/v1/streaming/list", "alice", 400, "Missing list name parameter"},
		{"/api/v1/streaming/list?list=8", "alice", 401, "Not authorized to stream this list"},
		{"/api/v1/streaming/list?list=x", "alice", 401, "Not authorized to stream this list"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", f.srv.URL+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, _ := json.Marshal(map[string]string{"error": c.msg})
		if resp.StatusCode != c.status || strings.TrimSpace(string(body)) != string(want) {
			t.Errorf("%s (%s): %d %s, want %d %s", c.path, c.token, resp.StatusCode, body, c.status, want)
		}
		if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s: headers %v", c.path, resp.Header)
		}
	}
	f.store.mu.Lock()
	f.store.down = true
	f.store.mu.Unlock()
	resp, err := http.Get(f.srv.URL + "/api/v1/streaming/public?access_token=alice")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 500 || strings.TrimSpace(string(body)) != `{"error":"An unexpected error occurred"}` {
		t.Errorf("database down: %d %s", resp.StatusCode, body)
	}
}

func TestSSEDeliveryAndViewerFilters(t *testing.T) {
	f := newFixture(t)
	br, done := f.sse(t, "/api/v1/streaming/public", "alice")
	defer done()
	// 666 is blocked by account 10: only the second status arrives.
	for _, ev := range [][]byte{status("666", "1"), status("5", "2")} {
		if _, err := f.eng.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	got := nextEvent(t, br)
	if !strings.HasPrefix(got, "event: update\ndata: {") || !strings.Contains(got, `"id":"2"`) {
		t.Fatalf("got %q", got)
	}
	// A reload applies a new block to the open stream.
	f.store.mu.Lock()
	f.store.viewers["10"] = &Viewer{BlockedAccounts: []string{"5"}}
	f.store.mu.Unlock()
	if err := f.h.Reload(context.Background(), "10"); err != nil {
		t.Fatal(err)
	}
	for _, ev := range [][]byte{status("5", "3"), status("666", "4")} {
		if _, err := f.eng.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	if got := nextEvent(t, br); !strings.Contains(got, `"id":"4"`) {
		t.Fatalf("after reload got %q", got)
	}
}

func TestSSEHeartbeatAndKill(t *testing.T) {
	f := newFixture(t)
	br, done := f.sse(t, "/api/v1/streaming/user", "alice")
	defer done()
	line, err := br.ReadString('\n')
	if err != nil || line != ":thump\n" {
		t.Fatalf("heartbeat %q %v", line, err)
	}
	f.bus.mu.Lock()
	n := f.bus.listen["timeline:access_token:1"] + f.bus.listen["timeline:system:10"]
	f.bus.mu.Unlock()
	if n != 2 {
		t.Fatalf("system channels listened: %v", f.bus.listen)
	}
	f.h.SystemMessage("timeline:access_token:1", []byte(`{"event":"kill"}`))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := br.ReadString('\n'); err == io.EOF {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("stream not ended by kill")
		}
	}
}

func TestRefusedUpgrade(t *testing.T) {
	f := newFixture(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /api/v1/streaming/?stream=public&access_token=bogus HTTP/1.1\r\nHost: x\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	lines := strings.Split(string(raw), "\r\n")
	want := []string{"HTTP/1.1 401 Unauthorized", "Connection: close", "Content-Type: text/plain", "Content-Length: 0"}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Fatalf("response %q, want line %d %q", raw, i, w)
		}
	}
	if !strings.HasPrefix(lines[4], "X-Request-Id: ") || lines[5] != "X-Error-Message: Invalid access token" || !strings.HasSuffix(string(raw), "\r\n\r\n") {
		t.Fatalf("response %q", raw)
	}
}

func TestWebSocketMultiplexing(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/api/v1/streaming/?stream=user"
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if resp.Header.Get("Sec-WebSocket-Protocol") != "alice" {
		t.Fatalf("subprotocol not echoed: %v", resp.Header)
	}
	send := func(s string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	send(`not json`)
	send(`{"type":"what"}`)
	send(`{"type":"subscribe","stream":"hashtag"}`)
	if got := read(); got != `{"error":"Missing tag name parameter","status":400}` {
		t.Fatalf("got %s", got)
	}
	send(`{"type":"subscribe","stream":"list","list":8}`)
	if got := read(); got != `{"error":"Not authorized to stream this list","status":401}` {
		t.Fatalf("got %s", got)
	}
	send(`{"type":"subscribe","stream":"nope"}`)
	if got := read(); got != `{"error":"Unknown stream type","status":400}` {
		t.Fatalf("got %s", got)
	}
	send(`{"type":"subscribe","stream":["hashtag"],"tag":"Rust"}`)
	send(`{"type":"subscribe","stream":"hashtag","tag":"rust"}`) // repeated: ignored
	send(`{"type":"subscribe","stream":"list","list":"7"}`)
	// The error answers above prove the earlier messages were handled; one
	// more round trip makes sure the last subscriptions are in place.
	send(`{"type":"subscribe","stream":"nope"}`)
	read()
	if _, err := f.eng.PublishChannel("timeline:hashtag:rust", []byte(`{"event":"delete","payload":"9"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `{"stream":["hashtag","Rust"],"event":"delete","payload":"9"}` {
		t.Fatalf("got %s", got)
	}
	if _, err := f.eng.PublishChannel("timeline:list:7", []byte(`{"event":"delete","payload":"10"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `{"stream":["list","7"],"event":"delete","payload":"10"}` {
		t.Fatalf("got %s", got)
	}
	if _, err := f.eng.PublishChannel("timeline:10", []byte(`{"event":"delete","payload":"11"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `{"stream":["user"],"event":"delete","payload":"11"}` {
		t.Fatalf("got %s", got)
	}
	// A binary message closes with 1003.
	if err := ws.Write(ctx, websocket.MessageBinary, []byte{1}); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusUnsupportedData ||
		ce.Reason != "The mastodon streaming server does not support binary messages" {
		t.Fatalf("close: %v", err)
	}
}

func TestShutdownClosesWebSocketsWith1001(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/api/v1/streaming/?stream=public&access_token=alice"
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	errc := make(chan error, 1)
	go func() { _, _, err := ws.Read(ctx); errc <- err }()
	time.Sleep(100 * time.Millisecond)
	if err := f.h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code := websocket.CloseStatus(<-errc); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d", code)
	}
}

// A client that goes away ends its stream at once, not at the next
// heartbeat: its system channels, subscriber and presence keys are
// released. Over TLS the hijacked connection is not a socket the close
// watch can take, and a read notices instead.
func TestSSEClientGoneEndsStream(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		f := newFixture(t)
		f.h.opts.Heartbeat = time.Hour
		if tlsOn {
			f.srv.Close()
			f.srv = httptest.NewTLSServer(f.h)
		}
		_, done := f.sse(t, "/api/v1/streaming/public", "alice")
		// Listened system channels and tracked connections.
		held := func() (int, int) {
			f.bus.mu.Lock()
			listened := f.bus.listen["timeline:system:10"]
			f.bus.mu.Unlock()
			return listened, f.connections()
		}
		if l, c := held(); l != 1 || c != 1 {
			t.Fatalf("tls %v: system channel listened %d times, %d connections", tlsOn, l, c)
		}
		done()
		deadline := time.Now().Add(2 * time.Second)
		for l, c := held(); l != 0 || c != 0; l, c = held() {
			if time.Now().After(deadline) {
				t.Fatalf("tls %v: the stream outlived its client (%d listened, %d connections)", tlsOn, l, c)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Every ping interval the server pings; a client that answers stays, one
// that does not is closed after the next interval.
func TestWebSocketPingClosesSilentClients(t *testing.T) {
	f := newFixture(t)
	f.h.opts.PingInterval = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/api/v1/streaming/?stream=public&access_token=alice"

	// A silent client: the handshake by hand, then nothing but reading
	// raw bytes (a pong is never sent).
	raw, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, _ = io.WriteString(raw, "GET /api/v1/streaming/?stream=public&access_token=alice HTTP/1.1\r\nHost: x\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	silent := make(chan []byte, 1)
	go func() {
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(raw) // until the server closes
		silent <- b
	}()

	// A client that answers pings (coder/websocket does while it reads).
	ws, _, err := websocket.Dial(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	got := make(chan string, 1)
	go func() {
		_, b, err := ws.Read(ctx)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()

	start := time.Now()
	b := <-silent
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("silent client closed after %v", elapsed)
	}
	resp, frames, _ := strings.Cut(string(b), "\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 101 ") || !strings.HasPrefix(frames, "\x89\x00") {
		t.Fatalf("silent client got %q, want the upgrade then a ping", b)
	}
	time.Sleep(300 * time.Millisecond) // three more intervals
	if _, err := f.eng.PublishChannel("timeline:public", status("1", "5")); err != nil {
		t.Fatal(err)
	}
	if msg := <-got; !strings.Contains(msg, `"event":"update"`) {
		t.Fatalf("answering client: %s", msg)
	}
}

// The subscriber object is the account's filters with the connection's
// keys added, whatever the filters' spacing.
func TestSubscriberJSON(t *testing.T) {
	viewer, _ := (&Viewer{BlockedAccounts: []string{"1", "2"}, Languages: []string{"en"}}).engineJSON()
	for _, opts := range []Options{{}, {QueueCapacity: 9, Overflow: `drop"newest`, EventIDs: true}} {
		h := &Handler{opts: opts}
		for _, filters := range [][]byte{nil, []byte(`{}`), []byte(" { } "), viewer} {
			var got, want map[string]any
			if err := json.Unmarshal(h.subscriberJSON(`a"1`, filters), &got); err != nil {
				t.Fatalf("%s: %v", filters, err)
			}
			_ = json.Unmarshal(filters, &want)
			if want == nil {
				want = map[string]any{}
			}
			want["account"] = `a"1`
			if opts.QueueCapacity > 0 {
				want["queue_capacity"] = float64(opts.QueueCapacity)
				want["overflow"] = opts.Overflow
				want["event_ids"] = true
			}
			if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
				t.Errorf("filters %s, options %+v:\n got %s\nwant %s", filters, opts, g, w)
			}
		}
	}
}

// settle returns the goroutines once there are at most want, or after 1.5 s
// (streams settle).
func settle(want int) int {
	var g int
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if g = runtime.NumGoroutine(); g <= want {
			break
		}
	}
	return g
}

// A stream holds no goroutine of its own (the writers are shared; a
// WebSocket's reader neither, see TestWebSocketReader), yet it still
// delivers events and heartbeats, and ends when its client leaves.
func TestIdleStreamsHoldNoGoroutine(t *testing.T) {
	f := newFixture(t)
	f.h.opts.Heartbeat = 3 * time.Second // after the idle checks below
	const n = 20
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	before := runtime.NumGoroutine()
	var clients []*bufio.Reader
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /api/v1/streaming/public?access_token=alice HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "3\r\n" { // the chunk of ":)\n"
				break
			}
		}
		clients, conns = append(clients, br), append(conns, c)
	}
	if g := settle(before + 2); g > before+2 {
		t.Fatalf("%d idle streams hold %d goroutines", n, g-before)
	}
	readUntil := func(what string) {
		for i, br := range clients {
			_ = conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("client %d waiting for %q: %v", i, what, err)
				}
				if strings.HasPrefix(line, what) {
					break
				}
			}
		}
	}
	if _, err := f.eng.PublishChannel("timeline:public", status("1", "5")); err != nil {
		t.Fatal(err)
	}
	readUntil("event: update")
	if g := settle(before + 2); g > before+2 {
		t.Fatalf("after an event, %d streams hold %d goroutines", n, g-before)
	}
	readUntil(":thump") // the heartbeat of a stream without a goroutine
	if g := settle(before + 2); g > before+2 {
		t.Fatalf("after a heartbeat, %d streams hold %d goroutines", n, g-before)
	}
	for _, c := range conns {
		c.Close()
	}
	f.waitConnectionsGone(t, 3*time.Second, "idle streams outlived their clients")
}

// A client that stops reading fills its socket: its connection goes to its
// slow path (a writer never waits for it), another client keeps receiving
// meanwhile, and once the slow one reads again it gets every frame, in order.
func TestSlowClientDoesNotHoldOthers(t *testing.T) {
	f := newFixture(t)
	f.h.opts.QueueCapacity = 4000
	slow, doneSlow := f.sse(t, "/api/v1/streaming/public", "alice")
	defer doneSlow()
	fast, doneFast := f.sse(t, "/api/v1/streaming/public", "alice")
	defer doneFast()
	const n = 3000 // 8 KB each: more than loopback's socket buffers hold
	pad := strings.Repeat("x", 8<<10)
	for i := 1; i <= n; i++ {
		ev, _ := json.Marshal(map[string]any{"event": "update", "payload": map[string]any{
			"id": strconv.Itoa(i), "visibility": "public", "language": "en", "spoiler_text": "",
			"content": fmt.Sprintf("#%d#%s", i, pad), "account": map[string]any{"id": "5", "acct": "someone"},
			"mentions": []any{}, "media_attachments": []any{}, "tags": []any{}, "reblog": nil,
		}})
		if _, err := f.eng.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func(br *bufio.Reader) <-chan error {
		got := make(chan error, 1)
		go func() {
			for i := 1; i <= n; {
				line, err := br.ReadString('\n')
				if err != nil {
					got <- fmt.Errorf("before event %d: %v", i, err)
					return
				}
				if !strings.HasPrefix(line, "data: ") {
					continue
				}
				if !strings.Contains(line, fmt.Sprintf("#%d#", i)) {
					got <- fmt.Errorf("event %d: %.80q", i, line)
					return
				}
				i++
			}
			got <- nil
		}()
		return got
	}
	for name, br := range map[string]*bufio.Reader{"fast": fast, "slow, reading at last": slow} {
		select {
		case err := <-readAll(br):
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s client: not every event within 20 s", name)
		}
	}
}

// Over HTTP/2 the response cannot be hijacked: the stream is written
// through net/http (every batch on its connection's slow path), with
// heartbeats, and ends when the client goes away.
func TestSSEOverHTTP2(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewUnstartedServer(f.h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/streaming/public", nil)
	req.Header.Set("Authorization", "Bearer alice")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != ":)\n" {
		t.Fatalf("first line %q", line)
	}
	for i := 1; i <= 3; i++ {
		if _, err := f.eng.Publish(status("5", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if got := nextEvent(t, br); !strings.Contains(got, fmt.Sprintf(`"id":"%d"`, i)) {
			t.Fatalf("event %d: %q", i, got)
		}
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ":thump\n" {
			break
		}
	}
	resp.Body.Close()
	f.waitConnectionsGone(t, 5*time.Second, "the stream outlived its HTTP/2 client")
}
