package main

// End-to-end test of the evroute-streaming binary against a real Postgres
// (Mastodon's schema and seed, tests/mastodon-db), a real redis-server and
// real clients (net/http SSE, curl -N, Mastodon.py, a WebSocket client doing
// the web UI's multiplexing). scripts/test.d/80-streaming.sh sets it up:
//
//	EVS_E2E_BIN           the server binary
//	EVS_E2E_DATABASE_URL  a database with tests/mastodon-db loaded (nusers >= 10)
//	EVS_E2E_MASTODON_PY   set when python3 can import Mastodon.py

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

const fixtures = `
INSERT INTO accounts (id, username, domain, suspended_at) VALUES
  (900001, 'e2esuspended', NULL, now()), (900002, 'e2edisabled', NULL, NULL);
INSERT INTO users (id, account_id, disabled) VALUES (900001, 900001, false), (900002, 900002, true);
INSERT INTO oauth_access_tokens (id, token, scopes, resource_owner_id, revoked_at) VALUES
  (900001, 'e2e-suspended', 'read', 900001, NULL), (900002, 'e2e-disabled', 'read', 900002, NULL),
  (900003, 'e2e-revoked', 'read', 1, now()), (900004, 'e2e-write', 'write', 2, NULL),
  (900005, 'e2e-statuses', 'read:statuses', 3, NULL), (900006, 'e2e-notifications', 'read:notifications', 4, NULL);
INSERT INTO lists (id, account_id, title) VALUES (900001, 1000001, 'mine'), (900002, 1000002, 'theirs');
UPDATE users SET chosen_languages = '{en}' WHERE account_id = 1000001;
INSERT INTO blocks (account_id, target_account_id) VALUES (1000001, 900010);
INSERT INTO mutes (account_id, target_account_id) VALUES (1000001, 900011);
INSERT INTO account_domain_blocks (account_id, domain) VALUES (1000001, 'evil.example');
INSERT INTO blocks (account_id, target_account_id) VALUES (900013, 1000001);
INSERT INTO custom_filters (id, account_id, phrase, context, action, expires_at) VALUES
  (900001, 1000001, 'Spoilers', '{home,public}', 1, '2099-01-02 03:04:05.678'),
  (900002, 1000001, 'Expired', '{public}', 0, '2000-01-01 00:00:00');
INSERT INTO custom_filter_keywords (custom_filter_id, keyword, whole_word) VALUES
  (900001, 'Dune', true), (900001, 'arrakis', false), (900002, 'expired', false);
INSERT INTO user_roles (id, name, permissions) VALUES (900001, 'Moderator', 1048576);
UPDATE users SET role_id = 900001 WHERE account_id = 1000010;
`

type e2e struct {
	t         *testing.T
	bin       string
	db        *pgxpool.Pool
	rdb       *redis.Client
	redisPort int
	redis     *exec.Cmd
	server    *exec.Cmd
	env       []string
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *e2e) startRedis() {
	e.redis = exec.Command("redis-server", "--port", strconv.Itoa(e.redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	if err := e.redis.Start(); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, "redis-server", 10*time.Second, func() bool {
		return e.rdb.Ping(context.Background()).Err() == nil
	})
}

func (e *e2e) stopRedis() {
	_ = e.redis.Process.Signal(syscall.SIGTERM)
	_ = e.redis.Wait()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *e2e) startServer(extraEnv ...string) (*exec.Cmd, string) {
	port := freePort(e.t)
	cmd := exec.Command(e.bin)
	cmd.Env = append(append(os.Environ(), e.env...), append(extraEnv, "PORT="+strconv.Itoa(port))...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitFor(e.t, "server health", 10*time.Second, func() bool {
		code, _ := get(base + "/api/v1/streaming/health")
		return code == 200
	})
	return cmd, base
}

func (e *e2e) publish(channel string, msg any) {
	e.t.Helper()
	raw, err := json.Marshal(msg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.rdb.Publish(context.Background(), channel, raw).Err(); err != nil {
		e.t.Fatal(err)
	}
}

// rails is a message as Rails publishes it.
func rails(event string, payload any) map[string]any {
	m := map[string]any{"event": event, "queued_at": time.Now().UnixMilli()}
	if payload != nil {
		m["payload"] = payload
	}
	return m
}

func statusPayload(id, author, acct, lang string) map[string]any {
	return map[string]any{
		"id": id, "visibility": "public", "language": lang, "content": "<p>status " + id + "</p>",
		"spoiler_text": "", "account": map[string]any{"id": author, "acct": acct}, "mentions": []any{},
		"media_attachments": []any{}, "tags": []any{}, "reblog": nil, "in_reply_to_account_id": nil,
	}
}

// sseStream is an open SSE response whose frames arrive on a channel,
// without their "id:" line; last is the id of the last frame next returned.
type sseStream struct {
	frames chan sseFrame
	body   io.Closer
	ended  chan struct{}
	last   string
}

type sseFrame struct{ text, id string }

var wsID = regexp.MustCompile(`,"id":"[^"]*"}$`)

// withoutID drops the event id key of a WebSocket frame.
func withoutID(frame string) string { return wsID.ReplaceAllString(frame, "}") }

func (e *e2e) sse(base, path, token string, header ...string) *sseStream {
	e.t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	s := &sseStream{frames: make(chan sseFrame, 100), body: resp.Body, ended: make(chan struct{})}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != ":)\n" {
		e.t.Fatalf("%s: first line %q", path, line)
	}
	go func() {
		defer close(s.ended)
		var frame strings.Builder
		id := ""
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimSuffix(line[4:], "\n")
			case line == "\n" && frame.Len() > 0:
				s.frames <- sseFrame{frame.String(), id}
				frame.Reset()
				id = ""
			default:
				frame.WriteString(line)
			}
		}
	}()
	e.t.Cleanup(func() { resp.Body.Close() })
	return s
}

func (s *sseStream) next(t *testing.T) string {
	t.Helper()
	select {
	case f := <-s.frames:
		s.last = f.id
		return f.text
	case <-s.ended:
		t.Fatal("stream ended")
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5 s")
	}
	return ""
}

func (s *sseStream) waitEnd(t *testing.T) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end")
	}
}

// mastodonMetrics are the metrics of Mastodon's streaming/metrics.js (with
// prom-client's process defaults that are not Node-specific) and their types.
var mastodonMetrics = map[string]string{
	"connected_clients": "gauge", "connected_channels": "gauge", "redis_subscriptions": "gauge",
	"redis_messages_received_total": "counter", "messages_sent_total": "counter",
	"pg_pool_total_connections": "gauge", "pg_pool_idle_connections": "gauge", "pg_pool_waiting_queries": "gauge",
	"process_cpu_user_seconds_total": "counter", "process_cpu_system_seconds_total": "counter",
	"process_cpu_seconds_total": "counter", "process_start_time_seconds": "gauge",
	"process_resident_memory_bytes": "gauge", "process_virtual_memory_bytes": "gauge", "process_heap_bytes": "gauge",
	"process_open_fds": "gauge", "process_max_fds": "gauge",
}

var metricType = regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)

// checkMetrics checks /metrics: every Mastodon metric with its type, the
// primed label sets Mastodon has, and evroute's own.
func checkMetrics(t *testing.T, text string) {
	t.Helper()
	types := map[string]string{}
	for _, m := range metricType.FindAllStringSubmatch(text, -1) {
		types[m[1]] = m[2]
	}
	for name, typ := range mastodonMetrics {
		if types[name] != typ {
			t.Errorf("metric %s: type %q, want %q", name, types[name], typ)
		}
	}
	for _, kind := range []string{"eventsource", "websocket"} {
		want := []string{`connected_clients{type="` + kind + `"}`, `messages_sent_total{type="` + kind + `"}`}
		for _, ch := range []string{"system", "user", "user:notification", "list", "direct", "public", "public:media",
			"public:local", "public:local:media", "public:remote", "public:remote:media", "hashtag", "hashtag:local"} {
			want = append(want, `connected_channels{channel="`+ch+`",type="`+kind+`"}`)
		}
		for _, series := range want {
			if !strings.Contains(text, "\n"+series+" ") {
				t.Errorf("metrics lack %s", series)
			}
		}
	}
	for _, name := range []string{"evroute_frames_dropped_total", "evroute_queue_depth", "evroute_viewer_state_reloads_total",
		"evroute_redis_reconnects_total", "evroute_redis_presence_keys", "pg_pool_empty_acquire_total"} {
		if types[name] == "" {
			t.Errorf("metrics lack %s", name)
		}
	}
	for _, line := range []string{"pg_pool_total_connections ", "process_heap_bytes "} {
		i := strings.Index(text, "\n"+line)
		if i < 0 {
			t.Errorf("no sample %s", line)
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(text[i+1+len(line):])[0], 64)
		if err != nil || v <= 0 {
			t.Errorf("%s= %v %v, want > 0", line, v, err)
		}
	}
}

// metricSample is the value of an unlabelled series in /metrics text (-1:
// absent).
func metricSample(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}

func TestEndToEnd(t *testing.T) {
	bin, dsn := os.Getenv("EVS_E2E_BIN"), os.Getenv("EVS_E2E_DATABASE_URL")
	if bin == "" || dsn == "" {
		t.Skip("EVS_E2E_BIN and EVS_E2E_DATABASE_URL not set (scripts/test.d/80-streaming.sh sets them)")
	}
	ctx := context.Background()
	db, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, fixtures); err != nil {
		t.Fatalf("fixtures: %v", err)
	}
	e := &e2e{t: t, bin: bin, db: db, redisPort: freePort(t)}
	e.rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", e.redisPort)})
	defer e.rdb.Close()
	e.startRedis()
	defer e.stopRedis()
	e.env = []string{"DATABASE_URL=" + dsn, fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d", e.redisPort),
		"EVROUTE_FILTER_REFRESH_S=600", "LOG_LEVEL=warn"}
	var base string
	e.server, base = e.startServer()
	waitFor(t, "ready", 10*time.Second, func() bool { code, _ := get(base + "/api/v1/streaming/ready"); return code == 200 })

	t.Run("endpoints", func(t *testing.T) {
		resp, err := http.Get(base + "/api/v1/streaming/health")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "OK" || resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("health: %q %v", b, resp.Header)
		}
		// An authenticated request: the pool keeps its connection.
		e.sse(base, "/api/v1/streaming/public", "benchtok3").body.Close()
		_, metrics := get(base + "/metrics")
		checkMetrics(t, metrics)
	})

	t.Run("bad TRUSTED_PROXY_IP", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = append(append(os.Environ(), e.env...), "TRUSTED_PROXY_IP=10.0.0.1, localhost", "PORT="+strconv.Itoa(freePort(t)))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `Invalid TRUSTED_PROXY_IP environment variable: "localhost"`) {
			t.Fatalf("%v: %s", err, out)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, downBase := e.startServer("DATABASE_URL=postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
		cases := []struct {
			base, path, token string
			status            int
			msg               string
		}{
			{base, "/api/v1/streaming/nope", "benchtok1", 400, "Unknown channel requested"},
			{base, "/api/v1/streaming/public", "", 401, "Missing access token"},
			{base, "/api/v1/streaming/public", "bogus", 401, "Invalid access token"},
			{base, "/api/v1/streaming/public", "e2e-revoked", 401, "Invalid access token"},
			{base, "/api/v1/streaming/public", "e2e-disabled", 401, "Invalid access token"},
			{base, "/api/v1/streaming/public", "e2e-suspended", 401, "Invalid access token"},
			{base, "/api/v1/streaming/public", "e2e-write", 401, "Access token does not have the required scopes"},
			{base, "/api/v1/streaming/user/notification", "e2e-statuses", 401, "Access token does not have the required scopes"},
			{base, "/api/v1/streaming/hashtag", "benchtok1", 400, "Missing tag name parameter"},
			{base, "/api/v1/streaming/hashtag/local", "benchtok1", 400, "Missing tag name parameter"},
			{base, "/api/v1/streaming/list", "benchtok1", 400, "Missing list name parameter"},
			{base, "/api/v1/streaming/list?list=900002", "benchtok1", 401, "Not authorized to stream this list"},
			{base, "/api/v1/streaming/list?list=abc", "benchtok1", 401, "Not authorized to stream this list"},
			{downBase, "/api/v1/streaming/public", "benchtok1", 500, "An unexpected error occurred"},
		}
		for _, c := range cases {
			req, _ := http.NewRequest("GET", c.base+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want, _ := json.Marshal(map[string]string{"error": c.msg})
			if resp.StatusCode != c.status || strings.TrimSpace(string(b)) != string(want) || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: %d %s, want %d %s", c.path, c.token, resp.StatusCode, b, c.status, want)
			}
		}
		// The raw refused upgrade, and the WebSocket-only error.
		upgrades := []struct {
			base, query string
			status      string
			msg         string
		}{
			{base, "stream=public", "401 Unauthorized", "Missing access token"},
			{base, "stream=public&access_token=bogus", "401 Unauthorized", "Invalid access token"},
			{downBase, "stream=public&access_token=benchtok1", "500 Internal Server Error", "An unexpected error occurred"},
		}
		for _, u := range upgrades {
			conn, err := net.Dial("tcp", strings.TrimPrefix(u.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /api/v1/streaming/?%s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", u.query)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			raw, _ := io.ReadAll(conn)
			conn.Close()
			lines := strings.Split(string(raw), "\r\n")
			ok := len(lines) == 8 && lines[0] == "HTTP/1.1 "+u.status && lines[1] == "Connection: close" &&
				lines[2] == "Content-Type: text/plain" && lines[3] == "Content-Length: 0" &&
				strings.HasPrefix(lines[4], "X-Request-Id: ") && lines[5] == "X-Error-Message: "+u.msg && lines[6]+lines[7] == ""
			if !ok {
				t.Errorf("refused upgrade %s: %q", u.query, raw)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/streaming/?stream=nope&access_token=benchtok1", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if _, b, err := ws.Read(ctx); err != nil || string(b) != `{"error":"Unknown stream type","status":400}` {
			t.Errorf("unknown stream: %s %v", b, err)
		}
	})

	t.Run("streams", func(t *testing.T) {
		streams := []struct{ path, channel string }{
			{"/api/v1/streaming/user", "timeline:1000002"},
			{"/api/v1/streaming/user/notification", "timeline:1000002:notifications"},
			{"/api/v1/streaming/public", "timeline:public"},
			{"/api/v1/streaming/public?only_media=true", "timeline:public:media"},
			{"/api/v1/streaming/public/local", "timeline:public:local"},
			{"/api/v1/streaming/public/local?only_media=1", "timeline:public:local:media"},
			{"/api/v1/streaming/public/remote", "timeline:public:remote"},
			{"/api/v1/streaming/public/remote?only_media=yes", "timeline:public:remote:media"},
			{"/api/v1/streaming/hashtag?tag=Rust", "timeline:hashtag:rust"},
			{"/api/v1/streaming/hashtag/local?tag=Rust", "timeline:hashtag:rust:local"},
			{"/api/v1/streaming/list?list=900001", "timeline:list:900001"},
			{"/api/v1/streaming/direct", "timeline:direct:1000002"},
		}
		for i, s := range streams {
			token := "benchtok2"
			if strings.Contains(s.path, "list") {
				token = "benchtok1"
			}
			st := e.sse(base, s.path, token)
			id := strconv.Itoa(1000 + i)
			e.publish(s.channel, rails("delete", id))
			if got := st.next(t); got != "event: delete\ndata: "+id+"\n" {
				t.Errorf("%s: %q", s.path, got)
			}
			st.body.Close()
		}
		// Presence keys for the user stream's channels (SET ... EX 1080).
		st := e.sse(base, "/api/v1/streaming/user", "benchtok2")
		defer st.body.Close()
		waitFor(t, "presence key", 5*time.Second, func() bool {
			ttl, err := e.rdb.TTL(ctx, "subscribed:timeline:1000002").Result()
			return err == nil && ttl > 1000*time.Second && ttl <= 1080*time.Second
		})
		// Channels mode (the default): the node SUBSCRIBEs the channels its
		// clients listen to, no pattern.
		waitFor(t, "SUBSCRIBE timeline:1000002", 5*time.Second, func() bool {
			n, err := e.rdb.PubSubNumSub(ctx, "timeline:1000002").Result()
			return err == nil && n["timeline:1000002"] == 1
		})
		if n, err := e.rdb.PubSubNumPat(ctx).Result(); err != nil || n != 0 {
			t.Errorf("PUBSUB NUMPAT %d %v", n, err)
		}
		// A token without read or read:notifications gets the user stream
		// without notifications.
		statuses := e.sse(base, "/api/v1/streaming/user", "e2e-statuses")
		defer statuses.body.Close()
		e.publish("timeline:1000003:notifications", rails("notification", map[string]any{"id": "1"}))
		e.publish("timeline:1000003", rails("delete", "55"))
		if got := statuses.next(t); got != "event: delete\ndata: 55\n" {
			t.Errorf("read:statuses user stream: %q", got)
		}
	})

	t.Run("curl", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "curl", "-sN", "-H", "Authorization: Bearer benchtok4", base+"/api/v1/streaming/hashtag?tag=curl")
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		br := bufio.NewReader(out)
		if line, _ := br.ReadString('\n'); line != ":)\n" {
			t.Fatalf("curl: %q", line)
		}
		e.publish("timeline:hashtag:curl", rails("delete", "4242"))
		var got strings.Builder
		for !strings.HasSuffix(got.String(), "\n\n") {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("curl: %q %v", got.String(), err)
			}
			if !strings.HasPrefix(line, "id: ") { // event ids are on by default
				got.WriteString(line)
			}
		}
		if got.String() != "event: delete\ndata: 4242\n\n" {
			t.Fatalf("curl: %q", got.String())
		}
	})

	t.Run("mastodon.py", func(t *testing.T) {
		if os.Getenv("EVS_E2E_MASTODON_PY") == "" {
			t.Skip("EVS_E2E_MASTODON_PY not set")
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "testdata", "mastodon_py_stream.py")
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "python3", script, base, "benchtok5")
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		if line, _ := br.ReadString('\n'); line != "READY\n" {
			t.Fatalf("Mastodon.py: %q", line)
		}
		// Mastodon.py connects in a thread: publish until it has received.
		done := make(chan string, 1)
		go func() { line, _ := br.ReadString('\n'); done <- line }()
		for i := 0; ; i++ {
			e.publish("timeline:public", rails("update", statusPayload("77"+strconv.Itoa(i), "14715", "trwnh", "en")))
			select {
			case line := <-done:
				if !strings.HasPrefix(line, `{"event": "update", "id": "77`) {
					t.Fatalf("Mastodon.py: %q", line)
				}
				_ = cmd.Wait()
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})

	t.Run("viewer filters", func(t *testing.T) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok1")
		defer st.body.Close()
		mention := statusPayload("5", "14715", "trwnh", "en")
		mention["mentions"] = []any{map[string]any{"id": "900010"}}
		for _, p := range []map[string]any{
			statusPayload("1", "900010", "blocked", "en"),
			statusPayload("2", "900011", "muted", "en"),
			statusPayload("3", "900012", "someone@evil.example", "en"),
			statusPayload("4", "14715", "trwnh", "fr"),
			mention,
			statusPayload("5b", "900013", "blocksme", "en"), // its author blocks the viewer
			statusPayload("6", "14715", "trwnh", "en"),
		} {
			e.publish("timeline:public", rails("update", p))
		}
		if got := st.next(t); !strings.Contains(got, `"id":"6"`) {
			t.Fatalf("first delivered: %q", got)
		}
		// Another viewer without that state receives them (language aside).
		other := e.sse(base, "/api/v1/streaming/public", "benchtok6")
		defer other.body.Close()
		e.publish("timeline:public", rails("update", statusPayload("7", "900010", "blocked", "en")))
		if got := other.next(t); !strings.Contains(got, `"id":"7"`) {
			t.Fatalf("other viewer: %q", got)
		}
	})

	t.Run("keyword filters", func(t *testing.T) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok1")
		defer st.body.Close()
		match := statusPayload("20", "14715", "trwnh", "en")
		match["content"] = "<p>I read DUNE again</p>"
		e.publish("timeline:public", rails("update", match))
		e.publish("timeline:public", rails("update", statusPayload("21", "14715", "trwnh", "en")))
		var got struct {
			ID       string `json:"id"`
			Filtered []struct {
				Filter         map[string]any `json:"filter"`
				KeywordMatches []string       `json:"keyword_matches"`
				StatusMatches  any            `json:"status_matches"`
			} `json:"filtered"`
		}
		frame := st.next(t)
		if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.SplitN(frame, "\n", 3)[1], "data: ")), &got); err != nil {
			t.Fatalf("%q: %v", frame, err)
		}
		want := map[string]any{"id": "900001", "title": "Spoilers", "context": []any{"home", "public"},
			"expires_at": "2099-01-02T03:04:05.678Z", "filter_action": "hide"}
		if got.ID != "20" || len(got.Filtered) != 1 || fmt.Sprint(got.Filtered[0].Filter) != fmt.Sprint(want) ||
			fmt.Sprint(got.Filtered[0].KeywordMatches) != "[DUNE]" || got.Filtered[0].StatusMatches != nil {
			t.Fatalf("annotated: %q", frame)
		}
		if frame := st.next(t); !strings.Contains(frame, `"id":"21"`) || !strings.HasSuffix(frame, `,"filtered":[]}`+"\n") {
			t.Fatalf("not matching: %q", frame)
		}
	})

	t.Run("feed access", func(t *testing.T) {
		if _, err := db.Exec(ctx, `INSERT INTO settings (var, value) VALUES ('local_live_feed_access', E'--- disabled\n')`); err != nil {
			t.Fatal(err)
		}
		defer db.Exec(ctx, `DELETE FROM settings WHERE var = 'local_live_feed_access'`)
		_, restricted := e.startServer()
		public := e.sse(restricted, "/api/v1/streaming/public", "benchtok2")
		defer public.body.Close()
		local := e.sse(restricted, "/api/v1/streaming/public/local", "benchtok2")
		defer local.body.Close()
		staff := e.sse(restricted, "/api/v1/streaming/public/local", "benchtok10") // role with 0x100000
		defer staff.body.Close()
		e.publish("timeline:public", rails("update", statusPayload("30", "14715", "trwnh", "en")))
		e.publish("timeline:public", rails("update", statusPayload("31", "14716", "far@remote.example", "en")))
		e.publish("timeline:public:local", rails("update", statusPayload("32", "14715", "trwnh", "en")))
		if got := public.next(t); !strings.Contains(got, `"id":"31"`) {
			t.Fatalf("public with local hidden: %q", got)
		}
		if got := staff.next(t); !strings.Contains(got, `"id":"32"`) {
			t.Fatalf("staff on public:local: %q", got)
		}
		select {
		case f := <-local.frames:
			t.Fatalf("public:local while disabled: %q", f.text)
		case <-time.After(300 * time.Millisecond):
		}
	})

	// blockThenCheck adds a block of author by account 1000001 in the
	// database, waits, and checks that a status of author no longer reaches
	// 1000001's public stream.
	blockThenCheck := func(t *testing.T, base, author string, wait time.Duration, between func()) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok1")
		defer st.body.Close()
		e.publish("timeline:public", rails("update", statusPayload("100", author, "x", "en")))
		if got := st.next(t); !strings.Contains(got, `"id":"100"`) {
			t.Fatalf("before the block: %q", got)
		}
		if _, err := db.Exec(ctx, `INSERT INTO blocks (account_id, target_account_id) VALUES (1000001, $1)`, author); err != nil {
			t.Fatal(err)
		}
		if between != nil {
			between()
		}
		time.Sleep(wait)
		e.publish("timeline:public", rails("update", statusPayload("101", author, "x", "en")))
		e.publish("timeline:public", rails("update", statusPayload("102", "14715", "trwnh", "en")))
		if got := st.next(t); !strings.Contains(got, `"id":"102"`) {
			t.Fatalf("after the block: %q", got)
		}
	}

	t.Run("filters_changed", func(t *testing.T) {
		user := e.sse(base, "/api/v1/streaming/user", "benchtok1")
		defer user.body.Close()
		// The main server refreshes every 600 s: the reload comes from filters_changed.
		blockThenCheck(t, base, "900020", time.Second, func() {
			e.publish("timeline:1000001", rails("filters_changed", nil))
			e.publish("timeline:system:1000001", rails("filters_changed", nil))
		})
		if got := user.next(t); got != "event: filters_changed\ndata: undefined\n" {
			t.Fatalf("user stream: %q", got)
		}
	})

	t.Run("refresh", func(t *testing.T) {
		_, refreshing := e.startServer("EVROUTE_FILTER_REFRESH_S=1")
		blockThenCheck(t, refreshing, "900021", 2500*time.Millisecond, nil)
	})

	t.Run("triggers", func(t *testing.T) {
		cmd := exec.Command(bin, "install-triggers")
		cmd.Env = append(os.Environ(), e.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install-triggers: %v %s", err, out)
		}
		for i := 0; i < 3; i++ {
			blockThenCheck(t, base, strconv.Itoa(900030+i), time.Second, nil)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/streaming/?stream=user",
			&websocket.DialOptions{Subprotocols: []string{"benchtok1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if resp.Header.Get("Sec-WebSocket-Protocol") != "benchtok1" || resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("upgrade headers: %v", resp.Header)
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
			return withoutID(string(b))
		}
		send(`{"type":"subscribe","stream":"public:local"}`)
		send(`{"type":"subscribe","stream":["hashtag"],"tag":"Rust"}`)
		send(`{"type":"subscribe","stream":"list","list":"900001"}`)
		send(`{"type":"subscribe","stream":"list","list":"900002"}`)
		if got := read(); got != `{"error":"Not authorized to stream this list","status":401}` {
			t.Fatalf("list error: %s", got)
		}
		cases := []struct{ channel, want string }{
			{"timeline:public:local", `{"stream":["public:local"],"event":"delete","payload":"1"}`},
			{"timeline:hashtag:rust", `{"stream":["hashtag","Rust"],"event":"delete","payload":"2"}`},
			{"timeline:list:900001", `{"stream":["list","900001"],"event":"delete","payload":"3"}`},
			{"timeline:1000001", `{"stream":["user"],"event":"delete","payload":"4"}`},
		}
		for i, c := range cases {
			e.publish(c.channel, rails("delete", strconv.Itoa(i+1)))
			if got := read(); got != c.want {
				t.Errorf("%s: %s", c.channel, got)
			}
		}
		send(`{"type":"unsubscribe","stream":"hashtag","tag":"rust"}`)
		send(`{"type":"subscribe","stream":"nope"}`) // a round trip: the unsubscribe is done
		read()
		e.publish("timeline:hashtag:rust", rails("delete", "5"))
		e.publish("timeline:1000001", rails("delete", "6"))
		if got := read(); got != `{"stream":["user"],"event":"delete","payload":"6"}` {
			t.Errorf("after unsubscribe: %s", got)
		}
	})

	t.Run("resume", func(t *testing.T) {
		// A client cut mid-stream reconnects with Last-Event-ID and gets every
		// event exactly once, including those published while it was away.
		const total = 60
		seen := map[string]int{}
		collect := func(st *sseStream, n int) {
			for i := 0; i < n; i++ {
				f := st.next(t)
				seen[strings.TrimSuffix(strings.TrimPrefix(f, "event: delete\ndata: "), "\n")]++
			}
		}
		st := e.sse(base, "/api/v1/streaming/hashtag?tag=resume", "benchtok11")
		for i := 0; i < 20; i++ {
			e.publish("timeline:hashtag:resume", rails("delete", strconv.Itoa(i)))
		}
		collect(st, 10)
		last := st.last
		st.body.Close()
		for i := 20; i < 40; i++ { // while it is away
			e.publish("timeline:hashtag:resume", rails("delete", strconv.Itoa(i)))
		}
		again := e.sse(base, "/api/v1/streaming/hashtag?tag=resume", "benchtok11", "Last-Event-ID", last)
		defer again.body.Close()
		for i := 40; i < total; i++ {
			e.publish("timeline:hashtag:resume", rails("delete", strconv.Itoa(i)))
		}
		collect(again, total-10)
		for i := 0; i < total; i++ {
			if n := seen[strconv.Itoa(i)]; n != 1 {
				t.Errorf("event %d received %d times (last id %s)", i, n, last)
			}
		}
		// An id the server cannot resume from: the evroute.gap event first.
		gap := e.sse(base, "/api/v1/streaming/hashtag?tag=resume", "benchtok11", "Last-Event-ID", "elsewhere:5")
		defer gap.body.Close()
		if got := gap.next(t); got != "event: evroute.gap\ndata: elsewhere:5\n" {
			t.Fatalf("gap: %q", got)
		}
		// WebSocket: last_event_id in the query.
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+
			"/api/v1/streaming/?stream=hashtag&tag=resume&access_token=benchtok11&last_event_id="+url.QueryEscape(last), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		for i := 10; i < total; i++ {
			_, b, err := ws.Read(ctx)
			want := fmt.Sprintf(`{"stream":["hashtag","resume"],"event":"delete","payload":"%d"}`, i)
			if err != nil || withoutID(string(b)) != want {
				t.Fatalf("WebSocket resume: %s %v, want %s", b, err, want)
			}
		}
		_, metrics := get(base + "/metrics")
		if !strings.Contains(metrics, `evroute_resumes_total{result="gap"} 1`) ||
			!strings.Contains(metrics, `evroute_resumes_total{result="complete"} 2`) {
			t.Errorf("resume metrics:\n%s", metrics)
		}
		// Every frame written above came from a message with queued_at.
		count, sum := metricSample(metrics, "evroute_delivery_latency_seconds_count"),
			metricSample(metrics, "evroute_delivery_latency_seconds_sum")
		if count < float64(total) || sum < 0 || sum/count > 5 {
			t.Errorf("delivery latency: %v frames, %v s in all; want at least %d frames, under 5 s each", count, sum, total)
		}
	})

	t.Run("loadgen", func(t *testing.T) {
		for _, tc := range []struct {
			transport, stream string
			rate              float64
		}{{"sse", "public", 0}, {"sse", "public", 200}, {"sse", "user", 0}, {"ws", "public", 200}} {
			var out strings.Builder
			g := &loadgen{base: base, clients: 8, firstToken: 11, stream: tc.stream, transport: tc.transport,
				events: 40, rate: tc.rate, redisURL: fmt.Sprintf("redis://127.0.0.1:%d/0", e.redisPort),
				serverPID: e.server.Process.Pid, settle: 5 * time.Second, connectPar: 4, readers: 2, out: &out,
				trace: filepath.Join(t.TempDir(), "trace")}
			res, err := g.run()
			if err != nil {
				t.Fatalf("%+v: %v", tc, err)
			}
			if tc.rate > 0 {
				// Never early: event n goes out n intervals after the start at the soonest.
				interval := int64(float64(time.Second) / tc.rate)
				if len(res.late) != 40 {
					t.Fatalf("%+v: %d lateness figures", tc, len(res.late))
				}
				for n, sent := range g.sent {
					if early := res.start + int64(n)*interval - sent; early > 0 {
						t.Fatalf("%+v: event %d published %d ns early", tc, n, early)
					}
				}
			}
			checkTrace(t, g.trace, g.sent)
			lat := res.lat
			if res.expected != 8*40 || res.received != res.expected || len(lat.arrived) != int(res.received) || len(lat.read) != len(lat.arrived) {
				t.Fatalf("%+v: expected %d, received %d, %d latencies\n%s", tc, res.expected, res.received, len(lat.arrived), out.String())
			}
			// Each frame arrives before it is read, so every order statistic does too.
			for i := range lat.arrived {
				if lat.arrived[i] > lat.read[i] || lat.arrived[i] < 0 {
					t.Fatalf("%+v: arrival %d µs, read %d µs\n%s", tc, lat.arrived[i], lat.read[i], out.String())
				}
			}
			if runtime.GOOS == "linux" && g.unstamped.Load() != 0 {
				t.Fatalf("%d reads without a receive time\n%s", g.unstamped.Load(), out.String())
			}
			if !strings.Contains(out.String(), "deliveries 320 of 320 (lost 0)") || !strings.Contains(out.String(), "server: CPU") {
				t.Fatalf("report:\n%s", out.String())
			}
			t.Logf("%+v:\n%s", tc, out.String())
		}
	})

	t.Run("kill", func(t *testing.T) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok7")
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/streaming/?stream=public&access_token=benchtok7", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		// A round trip: the WebSocket's connection is set up (and listens to its
		// system channels) before its reader answers.
		if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","stream":"nope"}`)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.Read(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "system channel subscription", 5*time.Second, func() bool {
			n, err := e.rdb.PubSubNumSub(ctx, "timeline:access_token:7").Result()
			return err == nil && n["timeline:access_token:7"] == 1
		})
		// System channels get no presence key; the stream's channel does.
		waitFor(t, "presence key of timeline:public", 5*time.Second, func() bool {
			return e.rdb.Exists(ctx, "subscribed:timeline:public").Val() == 1
		})
		for _, key := range []string{"subscribed:timeline:access_token:7", "subscribed:timeline:system:1000007"} {
			if n := e.rdb.Exists(ctx, key).Val(); n != 0 {
				t.Errorf("presence key %s exists for a system channel", key)
			}
		}
		e.publish("timeline:access_token:7", map[string]any{"event": "kill"})
		st.waitEnd(t)
		if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) == -1 {
			t.Fatalf("WebSocket not closed by kill: %v", err)
		}
	})

	t.Run("redis restart", func(t *testing.T) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok8")
		defer st.body.Close()
		e.stopRedis()
		waitFor(t, "/ready 503", 10*time.Second, func() bool { code, _ := get(base + "/api/v1/streaming/ready"); return code == 503 })
		e.startRedis()
		waitFor(t, "/ready 200", 15*time.Second, func() bool { code, _ := get(base + "/api/v1/streaming/ready"); return code == 200 })
		e.publish("timeline:public", rails("delete", "8080"))
		if got := st.next(t); got != "event: delete\ndata: 8080\n" {
			t.Fatalf("after restart: %q", got)
		}
		// The system channels are subscribed again too: kill still works.
		ctx := context.Background()
		waitFor(t, "system channels subscribed again", 5*time.Second, func() bool {
			n, err := e.rdb.PubSubNumSub(ctx, "timeline:access_token:8", "timeline:system:1000008").Result()
			return err == nil && n["timeline:access_token:8"] == 1 && n["timeline:system:1000008"] == 1
		})
		e.publish("timeline:system:1000008", map[string]any{"event": "kill"})
		st.waitEnd(t)
	})

	t.Run("sigterm", func(t *testing.T) {
		st := e.sse(base, "/api/v1/streaming/public", "benchtok9")
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/streaming/?stream=public&access_token=benchtok9", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		closed := make(chan error, 1)
		go func() { _, _, err := ws.Read(ctx); closed <- err }()
		if err := e.server.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := websocket.CloseStatus(<-closed); code != websocket.StatusGoingAway {
			t.Errorf("WebSocket close code %d, want 1001", code)
		}
		st.waitEnd(t)
		err = e.server.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit: %v", err)
		}
	})
}

// checkTrace checks a loadgen -trace file: a line per event, in order,
// with its publish time, and a first arrival no later than the last.
func checkTrace(t *testing.T, path string, sent []int64) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != len(sent) {
		t.Fatalf("trace: %d lines for %d events", len(lines), len(sent))
	}
	for n, line := range lines {
		var i, at, first, last int64
		if _, err := fmt.Sscanf(line, "%d %d %d %d", &i, &at, &first, &last); err != nil || i != int64(n) || at != sent[n] || first <= 0 || first > last {
			t.Fatalf("trace line %d: %q (%v)", n, line, err)
		}
	}
}
