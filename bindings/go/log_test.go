package evroute

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects slog output written from the library's threads,
// and when each write (one record) came.
type lockedBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []timedWrite
}

type timedWrite struct {
	at   time.Time
	text string
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes = append(b.writes, timedWrite{now, string(p)})
	return b.buf.Write(p)
}

// repeatInterval is the gap between the first two "connection failed"
// records of one source (the node's ingest and presence connections log
// their own failures), or 0 while no source has logged twice.
func (b *lockedBuffer) repeatInterval() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	last := map[string]time.Time{}
	for _, w := range b.writes {
		i, j := strings.Index(w.text, "msg="), strings.Index(w.text, "connection failed")
		if i < 0 || j < i {
			continue
		}
		source := w.text[i:j]
		if at, ok := last[source]; ok {
			return w.at.Sub(at)
		}
		last[source] = w.at
	}
	return 0
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A node on an unreachable Redis logs its failure from its own thread; the
// record reaches the slog.Logger given to SetLogger, and nothing arrives
// once logging is off.
func TestLogRecordsReachSlog(t *testing.T) {
	var out lockedBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := SetLogger(logger, slog.LevelWarn); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = SetLogger(nil, slog.LevelInfo) }()

	eng := newEngine(t, Config{})
	node, err := eng.AttachRedis("redis://127.0.0.1:1/", RedisOptions{
		BackoffMin: 20 * time.Millisecond, BackoffMax: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "connection failed") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := out.String()
	if !strings.Contains(got, "level=WARN") || !strings.Contains(got, "connection failed") ||
		!strings.Contains(got, "target=evroute::redis_node") {
		t.Fatalf("no warning from the node in the slog output:\n%s", got)
	}

	// Failures come every 20 ms and every tenth is logged: wait for a
	// connection to log again, so the silence below means something, and take
	// the interval between its two records.
	var interval time.Duration
	for interval = out.repeatInterval(); interval == 0 && time.Now().Before(deadline); interval = out.repeatInterval() {
		time.Sleep(2 * time.Millisecond)
	}
	if interval == 0 {
		t.Fatalf("no connection logged a second failure while logging was on:\n%s", out.String())
	}

	if err := SetLogger(logger, slog.LevelError+1); err != nil {
		t.Fatal(err)
	}
	before := out.String()
	// Watch for at least three intervals (at least 300 ms, at most 2 s).
	watch := min(max(3*interval, 300*time.Millisecond), 2*time.Second)
	t.Logf("records %v apart; watching %v", interval, watch)
	time.Sleep(watch)
	if after := out.String(); after != before {
		t.Fatalf("records after logging was turned off:\n%s", after[len(before):])
	}
}
