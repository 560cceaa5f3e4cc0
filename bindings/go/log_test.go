package evroute

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects slog output written from the library's threads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
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

	if err := SetLogger(logger, slog.LevelError+1); err != nil {
		t.Fatal(err)
	}
	before := out.String()
	time.Sleep(300 * time.Millisecond) // failures every 20 ms; every tenth is logged
	if after := out.String(); after != before {
		t.Fatalf("records after logging was turned off:\n%s", after[len(before):])
	}
}
