package evroute

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func newEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newSub(t testing.TB, e *Engine, opts SubscriberOptions, subs ...Subscription) *Subscriber {
	t.Helper()
	s, err := e.NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, sub := range subs {
		if err := s.Subscribe(sub); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func expect(t *testing.T, s *Subscriber, event string, payload []byte, stream ...string) {
	t.Helper()
	f, err := s.Next(0)
	if err != nil || f == nil {
		t.Fatalf("expected a %s frame on %v, got %v %v", event, stream, f, err)
	}
	if f.Event != event || !reflect.DeepEqual(f.Stream, stream) {
		t.Fatalf("got %s on %v, want %s on %v", f.Event, f.Stream, event, stream)
	}
	if f.HasPayload != (payload != nil) || f.Payload != string(payload) {
		t.Fatalf("payload %q (has %v), want %q", f.Payload, f.HasPayload, payload)
	}
	if want := sseBytes(event, payload); !bytes.Equal(f.SSE, want) {
		t.Fatalf("SSE\n%q\nwant\n%q", f.SSE, want)
	}
	if want := wsBytes(stream, event, payload); !bytes.Equal(f.WS, want) {
		t.Fatalf("WS\n%q\nwant\n%q", f.WS, want)
	}
}

func expectCorpus(t *testing.T, s *Subscriber, name string, stream ...string) {
	t.Helper()
	doc := corpus(t, name)
	expect(t, s, eventName(t, doc), payloadOf(t, doc), stream...)
}

func expectEmpty(t *testing.T, s *Subscriber) {
	t.Helper()
	if f, err := s.Next(0); f != nil || err != nil {
		t.Fatalf("expected nothing, got %v %v", f, err)
	}
}

func mustPublish(t *testing.T, e *Engine, event []byte) PublishStats {
	t.Helper()
	st, err := e.Publish(event)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCorpusLifeCycle(t *testing.T) {
	e := newEngine(t, Config{})
	pub := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	local, err := e.NewSubscriberJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if err := local.SubscribeJSON([]byte(`{"type":"subscribe","stream":"public:local"}`)); err != nil {
		t.Fatal(err)
	}
	remote := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public:remote"})
	tag := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "hashtag", Tag: "#TEST!"})
	user := newSub(t, e, SubscriberOptions{Account: "14715"}, Subscription{Stream: "user"})

	files := mastodonFiles(t)
	for _, name := range files {
		st := mustPublish(t, e, corpus(t, name))
		if st.Delivered != st.Matched || st.Dropped != 0 {
			t.Fatalf("%s: %+v", name, st)
		}
	}
	for _, n := range []string{"07", "08", "10", "11", "12", "13", "14", "15", "16"} {
		expectCorpus(t, pub, mastodon(t, n), "public")
	}
	expectEmpty(t, pub)
	for _, n := range []string{"07", "11", "12", "13", "14", "15", "16"} {
		expectCorpus(t, local, mastodon(t, n), "public:local")
	}
	expectEmpty(t, local)
	for _, n := range []string{"08", "10"} {
		expectCorpus(t, remote, mastodon(t, n), "public:remote")
	}
	expectEmpty(t, remote)
	for _, n := range []string{"14", "15", "16"} {
		expectCorpus(t, tag, mastodon(t, n), "hashtag", "#TEST!")
	}
	expectEmpty(t, tag)
	expect(t, user, "filters_changed", nil, "user")
	for _, n := range []string{"04", "05", "06"} {
		expectCorpus(t, user, mastodon(t, n), "user")
	}
	expectEmpty(t, user)

	st, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := EngineStats{Published: uint64(len(files)), Matched: 25, Delivered: 25, Subscribers: 5, Subscriptions: 5}
	if st != want {
		t.Fatalf("engine stats %+v, want %+v", st, want)
	}
	if ss, err := pub.Stats(); err != nil || ss != (SubscriberStats{Matched: 9, Delivered: 9, Read: 9}) {
		t.Fatalf("subscriber stats %+v %v", ss, err)
	}
	for _, s := range []*Subscriber{pub, local, remote, tag, user} {
		s.Close()
	}
	if st, err := e.Stats(); err != nil || st.Subscribers != 0 || st.Subscriptions != 0 {
		t.Fatalf("after close: %+v %v", st, err)
	}
}

func TestRecipientsAndLists(t *testing.T) {
	e := newEngine(t, Config{})
	user := newSub(t, e, SubscriberOptions{Account: "7"}, Subscription{Stream: "user"})
	list := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "list", List: "5"})
	notif := newSub(t, e, SubscriberOptions{Account: "7"}, Subscription{Stream: "user:notification"})
	doc := corpus(t, mastodon(t, "01"))
	if st := mustPublish(t, e, withFields(doc, `"recipients": [7], "lists": ["5"]`)); st != (PublishStats{2, 2, 0}) {
		t.Fatalf("%+v", st)
	}
	expect(t, user, "update", payloadOf(t, doc), "user")
	expect(t, list, "update", payloadOf(t, doc), "list", "5")
	note := corpus(t, mastodon(t, "02"))
	mustPublish(t, e, withFields(note, `"recipients": ["7"]`))
	expect(t, user, "notification", payloadOf(t, note), "user")
	expect(t, notif, "notification", payloadOf(t, note), "user:notification")
	// A community webhook event: the payload is the whole event; data.recipients is [7].
	community := corpus(t, "community/notification.mention.json")
	if st := mustPublish(t, e, community); st.Delivered != 2 {
		t.Fatalf("%+v", st)
	}
	expect(t, notif, "notification.mention", community, "user:notification")
	expect(t, user, "notification.mention", community, "user")
	for _, s := range []*Subscriber{user, list, notif} {
		expectEmpty(t, s)
	}
}

func TestPublishChannelUnsubscribeUpdate(t *testing.T) {
	e := newEngine(t, Config{RedisNamespace: "ns"})
	s := newSub(t, e, SubscriberOptions{Languages: []string{"de"}},
		Subscription{Stream: "public"}, Subscription{Stream: "hashtag", Tag: "Rust"})
	st, err := e.PublishChannel("ns:timeline:hashtag:rust", []byte(`{"event":"delete","payload":"2"}`))
	if err != nil || st != (PublishStats{1, 1, 0}) {
		t.Fatalf("%+v %v", st, err)
	}
	expect(t, s, "delete", []byte("2"), "hashtag", "Rust")
	if err := s.Unsubscribe(Subscription{Stream: "hashtag", Tag: "RUST"}); err != nil {
		t.Fatal(err)
	}
	if st, err := e.PublishChannel("ns:timeline:hashtag:rust", []byte(`{"event":"delete","payload":"3"}`)); err != nil || st.Matched != 0 {
		t.Fatalf("still subscribed: %+v %v", st, err)
	}
	doc := corpus(t, mastodon(t, "08")) // "en", public, remote
	if mustPublish(t, e, doc).Matched != 0 {
		t.Fatal("language filter ignored")
	}
	if err := s.Update(Filters{Languages: []string{"en"}}); err != nil {
		t.Fatal(err)
	}
	if mustPublish(t, e, doc).Matched != 1 {
		t.Fatal("update ignored")
	}
	var env struct {
		Payload struct{ Account struct{ ID string } }
	}
	if err := json.Unmarshal(doc, &env); err != nil || env.Payload.Account.ID == "" {
		t.Fatalf("account id %q: %v", env.Payload.Account.ID, err)
	}
	if err := s.Update(Filters{BlockedAccounts: []string{env.Payload.Account.ID}}); err != nil {
		t.Fatal(err)
	}
	if mustPublish(t, e, doc).Matched != 0 {
		t.Fatal("blocked account delivered")
	}
	expectCorpus(t, s, mastodon(t, "08"), "public")
	expectEmpty(t, s)
}

func TestOverflowPolicies(t *testing.T) {
	e := newEngine(t, Config{QueueCapacity: 2})
	oldest := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	newest := newSub(t, e, SubscriberOptions{Overflow: "drop_newest"}, Subscription{Stream: "public"})
	slow := newSub(t, e, SubscriberOptions{QueueCapacity: 1, Overflow: "disconnect"}, Subscription{Stream: "public"})
	for i := 0; i < 3; i++ {
		st, err := e.PublishChannel("timeline:public", []byte(`{"event":"delete","payload":"1"}`))
		if err != nil || (i == 0 && st.Matched != 3) {
			t.Fatalf("publish %d: %+v %v", i, st, err)
		}
	}
	for _, s := range []*Subscriber{oldest, newest} {
		st, err := s.Stats()
		if err != nil || st.Dropped != 1 || st.Depth != 2 {
			t.Fatalf("%+v %v", st, err)
		}
	}
	if slow.Closed() != "slow consumer" {
		t.Fatalf("closed: %q", slow.Closed())
	}
	_, err := slow.Next(0)
	var ee *Error
	if !errors.Is(err, ErrClosed) || !errors.As(err, &ee) || ee.Message != "slow consumer" {
		t.Fatalf("got %v", err)
	}
}

func TestNextTimeout(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	start := time.Now()
	if f, err := s.Next(150 * time.Millisecond); f != nil || err != nil {
		t.Fatal(f, err)
	}
	if d := time.Since(start); d < 140*time.Millisecond {
		t.Fatalf("returned after %v", d)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		if _, err := e.PublishChannel("timeline:public", []byte(`{"event":"delete","payload":"9"}`)); err != nil {
			t.Error(err)
		}
	}()
	if f, err := s.Next(5 * time.Second); err != nil || f == nil || f.Payload != "9" {
		t.Fatal(f, err)
	}
}

func TestVersion(t *testing.T) {
	if strings.Count(Version(), ".") != 2 {
		t.Fatal(Version())
	}
}
