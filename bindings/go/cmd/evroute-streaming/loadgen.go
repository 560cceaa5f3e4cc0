package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// loadgen drives any Mastodon-compatible streaming server: N SSE or
// WebSocket clients with the seed tokens (benchtok<i>), K events published
// to Redis as Rails does, and the deliveries, latency and server cost.
type loadgen struct {
	base       string
	clients    int
	firstToken int
	stream     string // public, user or home
	transport  string // sse or ws
	events     int
	rate       float64
	redisURL   string
	namespace  string
	serverPID  int
	settle     time.Duration
	window     int
	connectPar int

	sent     []int64 // publish time (ns) of event i
	received atomic.Int64
	clientWG sync.WaitGroup // the clients, which hand over their latencies when they end
	mu       sync.Mutex
	lat      []int64 // µs, every delivery
}

func runLoadgen(args []string) error {
	g := &loadgen{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&g.base, "url", "http://127.0.0.1:4000", "the streaming server")
	fs.IntVar(&g.clients, "clients", 1000, "connections")
	fs.IntVar(&g.firstToken, "first-token", 1, "client i uses token benchtok<first-token+i> (account 1000000+that)")
	fs.StringVar(&g.stream, "stream", "public", "public (every client on timeline:public), user (every client its own user stream, events to every account), home (each event to one client's timeline:<account>)")
	fs.StringVar(&g.transport, "transport", "sse", "sse or ws")
	fs.IntVar(&g.events, "events", 200, "events to publish")
	fs.Float64Var(&g.rate, "rate", 0, "events per second (0: as fast as Redis takes them)")
	fs.StringVar(&g.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis the server listens to")
	fs.StringVar(&g.namespace, "namespace", "", "REDIS_NAMESPACE of the server")
	fs.IntVar(&g.serverPID, "server-pid", 0, "server process for CPU seconds and RSS from /proc (0: not measured)")
	fs.DurationVar(&g.settle, "settle", 3*time.Second, "wait for stragglers after the last event")
	fs.IntVar(&g.window, "window", 0, "publish only while at most this many deliveries are outstanding (0: no limit); keeps Redis from cutting off a server that ingests slower than it publishes (pubsub client-output-buffer-limit)")
	fs.IntVar(&g.connectPar, "connect-parallel", 64, "connections opened at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case g.stream != "public" && g.stream != "user" && g.stream != "home":
		return fmt.Errorf("loadgen: -stream must be public, user or home")
	case g.transport != "sse" && g.transport != "ws":
		return fmt.Errorf("loadgen: -transport must be sse or ws")
	case g.clients <= 0 || g.events <= 0:
		return fmt.Errorf("loadgen: -clients and -events must be positive")
	}
	return g.run()
}

func (g *loadgen) channel(i int) string {
	ch := "timeline:public"
	if g.stream != "public" {
		ch = "timeline:" + strconv.Itoa(1000000+g.firstToken+i)
	}
	if g.namespace != "" {
		ch = g.namespace + ":" + ch
	}
	return ch
}

// procStats reads the server's CPU seconds and RSS (kB) from /proc.
func procStats(pid int) (cpu float64, rss, hwm int64) {
	if pid <= 0 {
		return 0, 0, 0
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		cpu = (ut + st) / 100 // USER_HZ
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "VmRSS:" {
				rss, _ = strconv.ParseInt(f[1], 10, 64)
			}
			if len(f) >= 2 && f[0] == "VmHWM:" {
				hwm, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return cpu, rss, hwm
}

// statusID finds the event number in a frame: the payload's first "id"
// (escaped inside a WebSocket frame's payload string, whose own "id" key is
// the event id).
func statusID(b []byte) (int, bool) {
	i := bytes.Index(b, []byte(`\"id\":\"9`))
	if i >= 0 {
		i += len(`\"id\":\"9`)
	} else if i = bytes.Index(b, []byte(`"id":"9`)); i >= 0 {
		i += len(`"id":"9`)
	} else {
		return 0, false
	}
	n, digits := 0, 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int(b[i]-'0')
		digits++
	}
	return n, digits > 0
}

// latencies are one client's publish-to-receipt times (µs), merged at the end.
type latencies struct{ us []int64 }

func (g *loadgen) record(l *latencies, frame []byte) {
	now := time.Now().UnixNano()
	n, ok := statusID(frame)
	if !ok || n >= len(g.sent) {
		return
	}
	sent := atomic.LoadInt64(&g.sent[n])
	if sent == 0 {
		return
	}
	g.received.Add(1)
	l.us = append(l.us, (now-sent)/1000)
}

func (g *loadgen) keep(l *latencies) {
	g.mu.Lock()
	g.lat = append(g.lat, l.us...)
	g.mu.Unlock()
}

// sseClient reads frames from one raw HTTP connection (no per-frame
// allocation beyond the line reader's).
func (g *loadgen) sseClient(ctx context.Context, i int, ready chan<- error) {
	u, err := url.Parse(g.base)
	if err != nil {
		ready <- err
		return
	}
	path := "/api/v1/streaming/public"
	if g.stream != "public" {
		path = "/api/v1/streaming/user"
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		ready <- err
		return
	}
	defer conn.Close()
	context.AfterFunc(ctx, func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer benchtok%d\r\nAccept: text/event-stream\r\n\r\n",
		path, u.Host, g.firstToken+i)
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		ready <- err
		return
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		ready <- fmt.Errorf("client %d: %s %s", i, resp.Status, b)
		return
	}
	body := bufio.NewReaderSize(resp.Body, 64<<10)
	first, err := body.ReadSlice('\n') // ":)" once subscribed
	if err != nil || !strings.HasPrefix(string(first), ":") {
		ready <- fmt.Errorf("client %d: first line %q %v", i, first, err)
		return
	}
	ready <- nil
	var l latencies
	defer g.keep(&l)
	for {
		line, err := body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if len(line) > 6 && string(line[:6]) == "data: " {
			g.record(&l, line)
		}
	}
}

// wsClient reads with gorilla/websocket into one reused buffer: cheaper per
// message than coder/websocket's reader (which the server uses), so that the
// load generator is not the limit.
func (g *loadgen) wsClient(ctx context.Context, i int, ready chan<- error) {
	stream := "public"
	if g.stream != "public" {
		stream = "user"
	}
	u := "ws" + strings.TrimPrefix(g.base, "http") + "/api/v1/streaming/?stream=" + stream
	d := websocket.Dialer{Subprotocols: []string{"benchtok" + strconv.Itoa(g.firstToken+i)}, ReadBufferSize: 64 << 10}
	ws, resp, err := d.DialContext(ctx, u, nil)
	if err != nil {
		ready <- err
		return
	}
	resp.Body.Close()
	defer ws.Close()
	context.AfterFunc(ctx, func() { ws.Close() })
	ws.SetReadLimit(1 << 20)
	ready <- nil
	var l latencies
	defer g.keep(&l)
	var buf bytes.Buffer
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		g.record(&l, buf.Bytes())
	}
}

func percentile(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))]) / 1000
}

// numberMark stands for the event number in the message template.
const numberMark = "EVENT_NUMBER"

// messageTemplate is a Redis message as Rails publishes it, for a public
// local status whose first key is its id (the event number prefixed with 9,
// so that it is never 0), cut where the event number goes; queued_at closes
// it. Built once: the load generator's publishing must not be the limit.
func messageTemplate() [][]byte {
	p := map[string]any{
		"created_at": "2026-11-30T12:00:00.000Z", "in_reply_to_id": nil,
		"in_reply_to_account_id": nil, "sensitive": false, "spoiler_text": "", "visibility": "public",
		"language": "en", "uri": "https://bench.example/statuses/" + numberMark, "url": "https://bench.example/@trwnh/" + numberMark,
		"replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "content": "<p>A status of the load generator, about as long as a real one: " + strings.Repeat("lorem ipsum dolor sit amet ", 12) + "</p>",
		"reblog": nil, "account": map[string]any{"id": "14715", "username": "trwnh", "acct": "trwnh", "display_name": "infinite love ⴳ", "locked": false, "bot": false, "url": "https://bench.example/@trwnh", "avatar": "https://bench.example/avatars/original/missing.png", "followers_count": 1, "following_count": 1, "statuses_count": 1, "emojis": []any{}, "fields": []any{}},
		"media_attachments": []any{}, "mentions": []any{}, "tags": []any{}, "emojis": []any{}, "card": nil, "poll": nil,
	}
	// Go's encoder sorts keys; "id" goes first by hand so the reader finds it at once.
	rest, _ := json.Marshal(p)
	msg := `{"event":"update","payload":{"id":"9` + numberMark + `",` + string(rest[1:]) + `,"queued_at":`
	parts := [][]byte{}
	for _, part := range strings.Split(msg, numberMark) {
		parts = append(parts, []byte(part))
	}
	return parts
}

// message is event n's message, published now.
func message(tpl [][]byte, n int) []byte {
	num := strconv.Itoa(n)
	out := make([]byte, 0, 2200)
	for i, part := range tpl {
		if i > 0 {
			out = append(out, num...)
		}
		out = append(out, part...)
	}
	return append(strconv.AppendInt(out, time.Now().UnixMilli(), 10), '}')
}

// waitWindow holds publishing until at most g.window of the deliveries
// published so far are outstanding, or nothing arrived for g.settle.
func (g *loadgen) waitWindow(published int64) {
	if g.window <= 0 {
		return
	}
	last, since := g.received.Load(), time.Now()
	for published-g.received.Load() > int64(g.window) && time.Since(since) < g.settle {
		time.Sleep(100 * time.Microsecond)
		if r := g.received.Load(); r != last {
			last, since = r, time.Now()
		}
	}
}

func (g *loadgen) run() error {
	ropts, err := redis.ParseURL(g.redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cpu0, rss0, _ := procStats(g.serverPID)
	ready := make(chan error, g.clients)
	sem := make(chan struct{}, g.connectPar)
	started := time.Now()
	for i := 0; i < g.clients; i++ {
		sem <- struct{}{}
		i := i
		go func() {
			r := make(chan error, 1)
			g.clientWG.Add(1)
			go func() {
				defer g.clientWG.Done()
				if g.transport == "ws" {
					g.wsClient(ctx, i, r)
				} else {
					g.sseClient(ctx, i, r)
				}
			}()
			err := <-r
			<-sem
			ready <- err
		}()
	}
	for i := 0; i < g.clients; i++ {
		if err := <-ready; err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	connectTime := time.Since(started)
	time.Sleep(500 * time.Millisecond) // presence keys and channel subscriptions settle
	cpu1, rss1, _ := procStats(g.serverPID)

	g.sent = make([]int64, g.events)
	perEvent := g.clients // public: every client; user: every client's own channel
	if g.stream == "home" {
		perEvent = 1
	}
	expected := int64(g.events * perEvent)
	var interval time.Duration
	if g.rate > 0 {
		interval = time.Duration(float64(time.Second) / g.rate)
	}
	// Pipelines of 64 events on public (the burst shape of the figures in
	// BENCHMARKS.md), about a thousand PUBLISH otherwise.
	batch := 64
	switch g.stream {
	case "user":
		batch = max(1, 1024/g.clients)
	case "home":
		batch = 1024
	}
	tpl := messageTemplate()
	pubStart := time.Now()
	for n := 0; n < g.events; {
		g.waitWindow(int64(n * perEvent))
		pipe := rdb.Pipeline()
		end := min(n+batch, g.events)
		if interval > 0 {
			end = n + 1
		}
		for ; n < end; n++ {
			msg := message(tpl, n)
			atomic.StoreInt64(&g.sent[n], time.Now().UnixNano())
			switch g.stream {
			case "public":
				pipe.Publish(ctx, g.channel(0), msg)
			case "user":
				for i := 0; i < g.clients; i++ {
					pipe.Publish(ctx, g.channel(i), msg)
				}
			case "home":
				pipe.Publish(ctx, g.channel(n%g.clients), msg)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if interval > 0 {
			if wait := time.Until(pubStart.Add(time.Duration(n) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
	pubTime := time.Since(pubStart)
	// Wait for the deliveries, or until nothing arrived for a while.
	last, lastChange := int64(-1), time.Now()
	for g.received.Load() < expected && time.Since(lastChange) < g.settle {
		if r := g.received.Load(); r != last {
			last, lastChange = r, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(pubStart)
	if g.received.Load() < expected {
		elapsed -= g.settle
	}
	cpu2, _, hwm := procStats(g.serverPID)
	cancel()
	g.clientWG.Wait()

	g.mu.Lock()
	lat := g.lat
	g.mu.Unlock()
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	got := g.received.Load()
	fmt.Printf("loadgen: %s %s, %d clients (connected in %.1fs), %d events (published in %.2fs)\n",
		g.stream, g.transport, g.clients, connectTime.Seconds(), g.events, pubTime.Seconds())
	fmt.Printf("deliveries %d of %d (lost %d) in %.2fs: %.0f deliveries/s\n",
		got, expected, expected-got, elapsed.Seconds(), float64(got)/elapsed.Seconds())
	if len(lat) > 0 {
		fmt.Printf("latency publish->receipt ms: p50 %.2f p99 %.2f max %.2f\n",
			percentile(lat, 0.5), percentile(lat, 0.99), float64(lat[len(lat)-1])/1000)
	}
	if g.serverPID > 0 {
		fmt.Printf("server: CPU %.2fs for the events (%.1f µs/delivery), %.2fs to connect; RSS %d kB idle before, %d kB with the clients (%.1f kB/connection), peak %d kB\n",
			cpu2-cpu1, (cpu2-cpu1)*1e6/float64(max(got, 1)), cpu1-cpu0, rss0, rss1, float64(rss1-rss0)/float64(g.clients), hwm)
	}
	return nil
}
