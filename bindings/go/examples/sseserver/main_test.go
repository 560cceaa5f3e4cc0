package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
)

// Expected frames are built from the corpus bytes and SPEC §4.

const corpusDir = "../../../../corpus"

func corpus(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimRight(b, "\n")
}

func mastodon(t *testing.T, prefix string) string {
	names, _ := filepath.Glob(filepath.Join(corpusDir, "mastodon", prefix+"-*.json"))
	if len(names) != 1 {
		t.Fatalf("corpus %s: %v", prefix, names)
	}
	return "mastodon/" + filepath.Base(names[0])
}

func corpusSSE(t *testing.T, prefix string) []byte {
	doc := corpus(t, mastodon(t, prefix))
	var env struct{ Event string }
	json.Unmarshal(doc, &env)
	return sse(env.Event, payloadOf(doc))
}

func payloadOf(doc []byte) []byte {
	key := []byte(`"payload": `)
	body := doc[bytes.Index(doc, key)+len(key) : len(doc)-1]
	if body[0] == '"' {
		body = body[1 : 1+bytes.IndexByte(body[1:], '"')]
	}
	return body
}

func sse(event string, payload []byte) []byte {
	if payload == nil {
		payload = []byte("undefined")
	}
	return []byte("event: " + event + "\ndata: " + string(payload) + "\n\n")
}

func startServer(t *testing.T, heartbeat time.Duration) *httptest.Server {
	engine, err := evroute.NewEngine(evroute.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&Server{Engine: engine, Heartbeat: heartbeat}) // a real loopback port
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		engine.Close()
	})
	return srv
}

type stream struct {
	resp *http.Response
	r    *bufio.Reader
}

func open(t *testing.T, srv *httptest.Server, path string) *stream {
	t.Helper()
	resp, err := http.Get(srv.URL + "/api/v1/streaming/" + path)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %s", path, resp.Status)
	}
	s := &stream{resp, bufio.NewReader(resp.Body)}
	if got := s.read(t, 3); string(got) != ":)\n" {
		t.Fatalf("first bytes %q", got)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

func (s *stream) read(t *testing.T, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s.r, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, buf)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timed out reading the stream")
	}
	return buf
}

func post(t *testing.T, srv *httptest.Server, query string, body []byte) (int, map[string]interface{}) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/publish"+query, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]interface{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("publish%s: status %d, body not JSON: %v", query, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func TestStreamsDeliverExactSSEFrames(t *testing.T) {
	srv := startServer(t, time.Minute)
	streams := map[string]*stream{
		"public": open(t, srv, "public"),
		"local":  open(t, srv, "public/local"),
		"tag":    open(t, srv, "hashtag?tag="+url.QueryEscape("#TEST!")),
		"list":   open(t, srv, "list?list=5"),
		"user":   open(t, srv, "user?account=14715"),
	}
	names, _ := filepath.Glob(filepath.Join(corpusDir, "mastodon", "*.json"))
	sort.Strings(names)
	for _, n := range names {
		if code, out := post(t, srv, "", corpus(t, "mastodon/"+filepath.Base(n))); code != 200 || out["dropped"] != 0.0 {
			t.Fatalf("%s: %d %v", n, code, out)
		}
	}
	listed := []byte(`{"lists": [5], ` + string(corpus(t, mastodon(t, "01"))[1:]))
	if _, out := post(t, srv, "", listed); out["delivered"] != 1.0 {
		t.Fatal(out)
	}
	want := map[string][][]byte{
		"public": {}, "local": {}, "tag": {},
		"list": {sse("update", payloadOf(listed))},
		"user": {sse("filters_changed", nil), corpusSSE(t, "04"), corpusSSE(t, "05"), corpusSSE(t, "06")},
	}
	for _, n := range strings.Fields("07 08 10 11 12 13 14 15 16") {
		want["public"] = append(want["public"], corpusSSE(t, n))
	}
	for _, n := range strings.Fields("07 11 12 13 14 15 16") {
		want["local"] = append(want["local"], corpusSSE(t, n))
	}
	for _, n := range strings.Fields("14 15 16") {
		want["tag"] = append(want["tag"], corpusSSE(t, n))
	}
	// A channel-mode publish comes right after: nothing else came in between.
	post(t, srv, "?channel=timeline:public", []byte(`{"event":"delete","payload":"1"}`))
	want["public"] = append(want["public"], sse("delete", []byte("1")))
	for key, frames := range want {
		expected := bytes.Join(frames, nil)
		if got := streams[key].read(t, len(expected)); !bytes.Equal(got, expected) {
			t.Fatalf("%s: got\n%q\nwant\n%q", key, got, expected)
		}
	}
}

func TestHeartbeats(t *testing.T) {
	srv := startServer(t, 100*time.Millisecond)
	s := open(t, srv, "public/local")
	if got := s.read(t, 2*len(":thump\n")); string(got) != ":thump\n:thump\n" {
		t.Fatalf("%q", got)
	}
}

func TestErrors(t *testing.T) {
	srv := startServer(t, time.Minute)
	for _, c := range []struct {
		path, message string
		code          int
	}{
		{"hashtag", "Missing tag name parameter", 400},
		{"list", "Missing list name parameter", 400},
		{"user", "Missing access token", 401},
		{"nowhere", "Not found", 404},
	} {
		resp, err := http.Get(srv.URL + "/api/v1/streaming/" + c.path)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]string
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: status %d, body not JSON: %v", c.path, resp.StatusCode, err)
		}
		if resp.StatusCode != c.code || !strings.Contains(out["error"], c.message) {
			t.Fatalf("%s: %d %v", c.path, resp.StatusCode, out)
		}
	}
	code, out := post(t, srv, "", corpus(t, "invalid/notification.contribution-trailing-comma.json"))
	if msg, _ := out["error"].(string); code != 400 || out["status"] != float64(evroute.StatusInvalidJSON) || msg == "" {
		t.Fatal(code, out)
	}
	code, out = post(t, srv, "?channel=bogus", []byte(`{"event":"delete","payload":"1"}`))
	if code != 400 || out["status"] != float64(evroute.StatusInvalidChannel) {
		t.Fatal(code, out)
	}
}
