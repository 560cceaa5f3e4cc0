package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// loadgen drives any Mastodon-compatible streaming server: N SSE or
// WebSocket clients with the seed tokens (benchtok<i>), K events published
// to Redis as Rails does, and the deliveries, latency and server cost.
type loadgen struct {
	base         string
	clients      int
	firstToken   int
	stream       string // public, user or home
	transport    string // sse or ws
	events       int
	rate         float64
	redisURL     string
	namespace    string
	serverPID    int
	settle       time.Duration
	window       int
	connectPar   int
	readers      int
	trace        string
	readerPolicy string
	readPause    time.Duration
	procs        int
	out          io.Writer

	sent      []int64 // publish time (UnixNano) of event i
	received  atomic.Int64
	unstamped atomic.Int64   // reads without a kernel receive time
	clientWG  sync.WaitGroup // the readers, which hand over their latencies when they end
	mu        sync.Mutex
	lat       latencies // every delivery
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
	fs.IntVar(&g.readers, "readers", runtime.GOMAXPROCS(0), "SSE: goroutines reading the clients' sockets (Linux: each in epoll_wait on its share)")
	fs.StringVar(&g.trace, "trace", "", "write one line per event to this file: its number, publish time (UnixNano), first and last arrival (µs after the publish; 0: none)")
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
	// Ps to spare beyond the readers', so that the paced publisher finds
	// one free when it wakes even while every reader is busy (they run until
	// their sockets are drained, and a thread that waits for a P can wait
	// tens of ms): with one to spare, the p99 of how late events went out at
	// 1,000 events/s was 23–100 ms; with four, 0.1–0.4 ms (BENCHMARKS.md).
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), g.readers+4))
	g.out = os.Stdout
	_, err := g.run()
	return err
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

// cpuWait is the time (s) the process's threads have spent runnable but
// not running, from /proc/PID/task/*/schedstat (Linux; 0 elsewhere;
// threads that ended are not counted).
func cpuWait(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var ns int64
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if f := strings.Fields(string(raw)); err == nil && len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			ns += n
		}
	}
	return float64(ns) / 1e9
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

// latencies are publish-to-receipt times (µs) of one reader's deliveries,
// merged at the end: arrived is when the bytes reached this host (the
// kernel's receive time, where there is one), read when the load
// generator read them; first and last are each event's earliest and latest
// arrival (0: none), which tell the path to the first client from the
// spread of a fan-out.
type latencies struct{ arrived, read, first, last []int64 }

// record accounts a frame that came in a read at the given times (UnixNano).
func (g *loadgen) record(l *latencies, frame []byte, arrived, read int64) {
	n, ok := statusID(frame)
	if !ok || n >= len(g.sent) {
		return
	}
	sent := atomic.LoadInt64(&g.sent[n])
	if sent == 0 {
		return
	}
	g.received.Add(1)
	us := max((arrived-sent)/1000, 1)
	l.arrived = append(l.arrived, us)
	l.read = append(l.read, (read-sent)/1000)
	if l.first == nil {
		l.first, l.last = make([]int64, len(g.sent)), make([]int64, len(g.sent))
	}
	if l.first[n] == 0 || us < l.first[n] {
		l.first[n] = us
	}
	l.last[n] = max(l.last[n], us)
}

func (g *loadgen) keep(l *latencies) {
	g.mu.Lock()
	g.lat.arrived = append(g.lat.arrived, l.arrived...)
	g.lat.read = append(g.lat.read, l.read...)
	if g.lat.first == nil {
		g.lat.first, g.lat.last = make([]int64, len(g.sent)), make([]int64, len(g.sent))
	}
	for n, us := range l.first {
		if us != 0 && (g.lat.first[n] == 0 || us < g.lat.first[n]) {
			g.lat.first[n] = us
		}
		g.lat.last[n] = max(g.lat.last[n], l.last[n])
	}
	g.mu.Unlock()
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

// loadResult is what a run measured.
type loadResult struct {
	expected, received int64
	lat                latencies // sorted
	start              int64     // UnixNano when publishing began
	late               []int64   // paced: µs each event was published after its due time
}

// connect opens every client, g.connectPar at a time, and hands their
// streams to g.readStreams.
func (g *loadgen) connect(ctx context.Context) error {
	ready := make(chan error, g.clients)
	sem := make(chan struct{}, g.connectPar)
	conns := make([]*streamConn, g.clients)
	for i := 0; i < g.clients; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			var err error
			if g.transport == "sse" {
				conns[i], err = g.dialSSE(ctx, i)
			} else {
				conns[i], err = g.dialWS(ctx, i)
			}
			ready <- err
		}()
	}
	var err error
	for i := 0; i < g.clients; i++ {
		if e := <-ready; e != nil && err == nil {
			err = fmt.Errorf("connect: %w", e)
		}
	}
	if err == nil {
		err = g.readStreams(ctx, conns)
	}
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}
	return err
}

func (g *loadgen) run() (*loadResult, error) {
	ropts, err := redis.ParseURL(g.redisURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		g.clientWG.Wait()
	}()

	g.sent = make([]int64, g.events)
	cpu0, rss0, _ := procStats(g.serverPID)
	started := time.Now()
	if err := g.connect(ctx); err != nil {
		return nil, err
	}
	connectTime := time.Since(started)
	time.Sleep(500 * time.Millisecond) // presence keys and channel subscriptions settle
	cpu1, rss1, _ := procStats(g.serverPID)
	own1, _, _ := procStats(os.Getpid())
	wait1, ownWait1 := cpuWait(g.serverPID), cpuWait(os.Getpid())

	// No collection while events flow (a pause would show as latency):
	// the readers allocate only when their latency lists grow; a memory
	// limit (1 GiB unless GOMEMLIMIT says otherwise) still bounds the heap.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	if debug.SetMemoryLimit(-1) == math.MaxInt64 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
	}

	perEvent := g.clients // public: every client; user: every client's own channel
	if g.stream == "home" {
		perEvent = 1
	}
	res := &loadResult{expected: int64(g.events * perEvent)}
	var interval time.Duration
	if g.rate > 0 {
		interval = time.Duration(float64(time.Second) / g.rate)
	}
	// Paced: one event every interval (publishPaced). Unpaced: pipelines of 64 events on public (the burst shape of the
	// figures in BENCHMARKS.md), about a thousand PUBLISH otherwise.
	batch := 64
	switch {
	case g.stream == "user":
		batch = max(1, 1024/g.clients)
	case g.stream == "home":
		batch = 1024
	}
	pubStart := time.Now()
	res.start = pubStart.UnixNano()
	if interval > 0 {
		err = g.publishPaced(ctx, ropts, pubStart, interval, perEvent, res)
	} else {
		err = g.publishBatches(ctx, rdb, batch, perEvent)
	}
	if err != nil {
		return nil, err
	}
	pubTime := time.Since(pubStart)
	// Wait for the deliveries, or until nothing arrived for a while.
	last, lastChange := int64(-1), time.Now()
	for g.received.Load() < res.expected && time.Since(lastChange) < g.settle {
		if r := g.received.Load(); r != last {
			last, lastChange = r, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(pubStart)
	if g.received.Load() < res.expected {
		elapsed -= g.settle
	}
	cpu2, _, hwm := procStats(g.serverPID)
	own2, _, _ := procStats(os.Getpid())
	wait2, ownWait2 := cpuWait(g.serverPID), cpuWait(os.Getpid())
	cancel()
	g.clientWG.Wait()

	res.received = g.received.Load()
	g.mu.Lock()
	res.lat = g.lat
	g.mu.Unlock()
	if g.trace != "" {
		if err := g.writeTrace(res.lat); err != nil {
			return nil, err
		}
	}
	slices.Sort(res.lat.arrived)
	slices.Sort(res.lat.read)
	// The spread of each event's fan-out (first to last arrival), and the
	// events published while the one before was still arriving (queued
	// behind its fan-out).
	var spread []int64
	overlapped := 0
	for n, first := range res.lat.first {
		if first != 0 {
			spread = append(spread, res.lat.last[n]-first)
		}
		if n > 0 && res.lat.last[n-1] != 0 && g.sent[n] < g.sent[n-1]+res.lat.last[n-1]*1000 {
			overlapped++
		}
	}
	slices.Sort(spread)
	res.lat.first = slices.DeleteFunc(res.lat.first, func(us int64) bool { return us == 0 })
	res.lat.last = slices.DeleteFunc(res.lat.last, func(us int64) bool { return us == 0 })
	slices.Sort(res.lat.first)
	slices.Sort(res.lat.last)
	got := res.received
	fmt.Fprintf(g.out, "loadgen: %s %s, %d clients (connected in %.1fs), %d events (published in %.2fs",
		g.stream, g.transport, g.clients, connectTime.Seconds(), g.events, pubTime.Seconds())
	if interval > 0 {
		slices.Sort(res.late)
		fmt.Fprintf(g.out, ", one every %v; late by ms: %s", interval, latencyLine(res.late))
	}
	fmt.Fprintf(g.out, ")\ndeliveries %d of %d (lost %d) in %.2fs: %.0f deliveries/s\n",
		got, res.expected, res.expected-got, elapsed.Seconds(), float64(got)/elapsed.Seconds())
	if len(res.lat.read) > 0 {
		fmt.Fprintf(g.out, "latency publish->arrival ms (kernel receive time%s): %s\n",
			unstampedNote(g.unstamped.Load()), latencyLine(res.lat.arrived))
		fmt.Fprintf(g.out, "latency publish->read by the load generator ms: %s\n", latencyLine(res.lat.read))
		fmt.Fprintf(g.out, "per event, publish->first arrival ms: %s; ->last arrival: %s; first->last: %s; published before the previous one's last arrival: %d of %d\n",
			latencyLine(res.lat.first), latencyLine(res.lat.last), latencyLine(spread), overlapped, g.events)
	}
	// On a machine it shares with the server, what the load generator
	// takes is not the server's.
	// The time runnable threads waited for a CPU tells a busy machine from a
	// slow server.
	fmt.Fprintf(g.out, "load generator: CPU %.2fs for the events (%.1f µs/delivery), %.2fs waiting for a CPU\n",
		own2-own1, (own2-own1)*1e6/float64(max(got, 1)), ownWait2-ownWait1)
	if g.serverPID > 0 {
		fmt.Fprintf(g.out, "server: CPU %.2fs for the events (%.1f µs/delivery), %.2fs waiting for a CPU, %.2fs to connect; RSS %d kB idle before, %d kB with the clients (%.1f kB/connection), peak %d kB\n",
			cpu2-cpu1, (cpu2-cpu1)*1e6/float64(max(got, 1)), wait2-wait1, cpu1-cpu0, rss0, rss1, float64(rss1-rss0)/float64(g.clients), hwm)
	}
	return res, nil
}

// eventChannels appends the channels event n goes to.
func (g *loadgen) eventChannels(dst []string, n int) []string {
	switch g.stream {
	case "user":
		for i := 0; i < g.clients; i++ {
			dst = append(dst, g.channel(i))
		}
		return dst
	case "home":
		return append(dst, g.channel(n%g.clients))
	}
	return append(dst, g.channel(0))
}

// publishPaced publishes event n at start + n*interval (a late one at
// once, its lateness kept in res.late), from an OS thread of its own: Go
// runs a P's timers only when that P schedules, so readers busy on every P
// would hold up a goroutine's timer.
func (g *loadgen) publishPaced(ctx context.Context, opts *redis.Options, start time.Time, interval time.Duration, perEvent int, res *loadResult) error {
	p, err := dialPaced(ctx, opts)
	if err != nil {
		return err
	}
	done := make(chan error)
	go func() {
		pacingThread()
		tpl := messageTemplate()
		var channels []string
		for n := 0; n < g.events; n++ {
			due := start.Add(time.Duration(n) * interval)
			sleepUntil(due)
			res.late = append(res.late, max(time.Since(due).Microseconds(), 0))
			g.waitWindow(int64(n * perEvent))
			channels = g.eventChannels(channels[:0], n)
			if err := p.publish(channels, message(tpl, n), &g.sent[n]); err != nil {
				done <- fmt.Errorf("publish: %w", err)
				return
			}
		}
		done <- nil
	}()
	err = <-done
	if cerr := p.close(int64(g.events*len(g.eventChannels(nil, 0))), g.settle); err == nil {
		err = cerr
	}
	return err
}

// publishBatches publishes the events in pipelines of batch events.
func (g *loadgen) publishBatches(ctx context.Context, rdb *redis.Client, batch, perEvent int) error {
	tpl := messageTemplate()
	var channels []string
	for n := 0; n < g.events; {
		g.waitWindow(int64(n * perEvent))
		pipe := rdb.Pipeline()
		for end := min(n+batch, g.events); n < end; n++ {
			msg := message(tpl, n)
			atomic.StoreInt64(&g.sent[n], time.Now().UnixNano())
			channels = g.eventChannels(channels[:0], n)
			for _, ch := range channels {
				pipe.Publish(ctx, ch, msg)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	return nil
}

func latencyLine(sorted []int64) string {
	return fmt.Sprintf("p50 %.2f p90 %.2f p99 %.2f max %.2f", percentile(sorted, 0.5), percentile(sorted, 0.9), percentile(sorted, 0.99), float64(sorted[len(sorted)-1])/1000)
}

func unstampedNote(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d reads had none and count their read time", n)
}

// writeTrace writes the -trace file: per event, its publish time and the
// first and last arrival, for lining up with a server's own timestamps.
func (g *loadgen) writeTrace(l latencies) error {
	var b bytes.Buffer
	for n, sent := range g.sent {
		var first, last int64
		if l.first != nil {
			first, last = l.first[n], l.last[n]
		}
		fmt.Fprintf(&b, "%d %d %d %d\n", n, sent, first, last)
	}
	return os.WriteFile(g.trace, b.Bytes(), 0o644)
}
