// Command sseserver is a Mastodon-style SSE streaming server on evroute.
//
//	go run ./examples/sseserver -addr 127.0.0.1:4000
//	curl -N 'http://127.0.0.1:4000/api/v1/streaming/hashtag?tag=rust'
//	curl --data-binary @../../corpus/mastodon/14-update-108914430312582020.json http://127.0.0.1:4000/publish
//
// GET /api/v1/streaming/{public,public/local,public/remote,hashtag,hashtag/local,list,user,
// user/notification,direct} streams SSE frames (query: tag, list, only_media; `account`
// stands in for an access token). It writes ":)" once subscribed and ":thump" as a
// heartbeat, as Mastodon does. POST /publish routes the body in content mode (docs/protocol.md);
// with ?channel=C it uses channel mode instead.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
)

const prefix = "/api/v1/streaming/"

var streams = map[string]string{
	"public": "public", "public/local": "public:local", "public/remote": "public:remote",
	"hashtag": "hashtag", "hashtag/local": "hashtag:local", "list": "list",
	"user": "user", "user/notification": "user:notification", "direct": "direct",
}

var needsAccount = map[string]bool{"user": true, "user:notification": true, "direct": true}

// Server serves the streaming API from one engine.
type Server struct {
	Engine    *evroute.Engine
	Heartbeat time.Duration
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/publish" && r.Method == http.MethodPost:
		s.publish(w, r)
	case r.URL.Path == prefix+"health":
		io.WriteString(w, "OK")
	case strings.HasPrefix(r.URL.Path, prefix) && r.Method == http.MethodGet:
		s.stream(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not found"})
	}
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	var stats evroute.PublishStats
	if channel := r.URL.Query().Get("channel"); channel != "" {
		stats, err = s.Engine.PublishChannel(channel, body)
	} else {
		stats, err = s.Engine.Publish(body)
	}
	var ee *evroute.Error
	if errors.As(err, &ee) {
		writeJSON(w, http.StatusBadRequest, map[string]interface{}{"error": ee.Message, "status": ee.Status})
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"matched": stats.Matched, "delivered": stats.Delivered, "dropped": stats.Dropped})
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	stream, ok := streams[strings.TrimPrefix(r.URL.Path, prefix)]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not found"})
		return
	}
	q := r.URL.Query()
	account := q.Get("account")
	if needsAccount[stream] && account == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Missing access token"})
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	sub, err := s.Engine.NewSubscriber(evroute.SubscriberOptions{Account: account})
	if err == nil {
		defer sub.Close()
		err = sub.Subscribe(evroute.Subscription{
			Stream: stream, Tag: q.Get("tag"), List: q.Get("list"), OnlyMedia: truthy(q.Get("only_media")),
		})
	}
	var ee *evroute.Error
	if errors.As(err, &ee) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": ee.Message})
		return
	} else if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	// The goroutine waits in Go's poller, not in an OS thread; the client
	// going away closes the subscriber, which makes its fd readable.
	waiter, err := sub.NewWaiter()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	defer waiter.Close() // runs before sub.Close
	go func() {
		<-r.Context().Done()
		sub.Close()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ":)\n") // subscribed before this is sent: a client that read it misses nothing
	flusher.Flush()
	// Everything waiting goes out in one write: one cgo call copies the SSE
	// bytes of up to 256 frames into the reused buffer.
	batch := evroute.NewBatch(64<<10, 0)
	for {
		n, err := sub.Drain(batch, evroute.EncodingSSE, 0)
		if err != nil {
			return // closed: client gone or slow consumer
		}
		if n == 0 {
			err := waiter.Wait(time.Now().Add(s.Heartbeat))
			if errors.Is(err, evroute.ErrWaitTimeout) {
				io.WriteString(w, ":thump\n")
				flusher.Flush()
			} else if err != nil {
				return
			}
			continue
		}
		if _, err := w.Write(batch.Buf); err != nil {
			return
		}
		flusher.Flush()
	}
}

// truthy follows Mastodon's boolean query values.
func truthy(v string) bool {
	switch v {
	case "", "false", "0", "f", "F", "FALSE", "off", "OFF":
		return false
	}
	return true
}

func main() {
	addr := flag.String("addr", "127.0.0.1:4000", "listen address")
	heartbeat := flag.Duration("heartbeat", 15*time.Second, "interval of :thump lines")
	config := flag.String("engine", "{}", "engine config JSON (docs/protocol.md)")
	flag.Parse()
	engine, err := evroute.NewEngineJSON([]byte(*config))
	if err != nil {
		log.Fatal(err)
	}
	defer engine.Close()
	log.Printf("listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, &Server{Engine: engine, Heartbeat: *heartbeat}))
}
