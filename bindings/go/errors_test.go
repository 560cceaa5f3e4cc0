package evroute

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

func expectErr(t *testing.T, err error, sentinel *Error, contains string) {
	t.Helper()
	var ee *Error
	if !errors.Is(err, sentinel) || !errors.As(err, &ee) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	if ee.Message == "" || !strings.Contains(ee.Message, contains) {
		t.Fatalf("message %q does not contain %q", ee.Message, contains)
	}
	for _, other := range []*Error{ErrClosed, ErrNull, ErrInvalidUTF8, ErrInvalidJSON, ErrInvalidSubscription,
		ErrInvalidChannel, ErrInvalidEvent, ErrTooLarge, ErrInvalidConfig, ErrIO, ErrPanic} {
		if other != sentinel && errors.Is(err, other) {
			t.Fatalf("%v also matches %v", err, other)
		}
	}
}

func TestPublishErrorsLeaveEngineUsable(t *testing.T) {
	e := newEngine(t, Config{MaxEventBytes: 4096})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	pub := func(b string) error { _, err := e.Publish([]byte(b)); return err }
	expectErr(t, pub(string(corpus(t, "invalid/notification.banner.sent-trailing-comma.json"))), ErrInvalidJSON, "")
	expectErr(t, pub(""), ErrInvalidJSON, "")
	expectErr(t, pub("{\"event\":\"delete\",\"payload\":\"\xff\"}"), ErrInvalidUTF8, "")
	expectErr(t, pub(`{"payload":"1"}`), ErrInvalidEvent, "")
	expectErr(t, pub(`{"event":"update","payload":{"id":"1"}}`), ErrInvalidEvent, "account")
	expectErr(t, pub(`{"event":"delete","payload":"`+strings.Repeat("1", 5000)+`"}`), ErrTooLarge, "")
	_, err := e.PublishChannel("not-a-timeline", []byte(`{"event":"delete","payload":"1"}`))
	expectErr(t, err, ErrInvalidChannel, "")
	_, err = e.PublishChannel("timeline:public", []byte(`{`))
	expectErr(t, err, ErrInvalidJSON, "")
	_, err = e.PublishChannel("timeline:public", []byte(`{"payload":"1"}`))
	expectErr(t, err, ErrInvalidEvent, "")
	if st, _ := e.Stats(); st.Rejected != 9 || st.Published != 0 {
		t.Fatalf("%+v", st)
	}
	expectEmpty(t, s)
	mustPublish(t, e, corpus(t, mastodon(t, "08")))
	expectCorpus(t, s, mastodon(t, "08"), "public")
}

func TestSubscriptionErrorsKeepOthers(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	expectErr(t, s.Subscribe(Subscription{Stream: "bogus"}), ErrInvalidSubscription, "Unknown stream type")
	expectErr(t, s.Subscribe(Subscription{Stream: "hashtag"}), ErrInvalidSubscription, "Missing tag name parameter")
	expectErr(t, s.Subscribe(Subscription{Stream: "list"}), ErrInvalidSubscription, "Missing list name parameter")
	expectErr(t, s.Subscribe(Subscription{Stream: "user"}), ErrInvalidSubscription, "")
	expectErr(t, s.SubscribeJSON([]byte("{")), ErrInvalidJSON, "")
	expectErr(t, s.UnsubscribeJSON(nil), ErrInvalidJSON, "")
	expectErr(t, s.SubscribeJSON([]byte("{\"stream\":\"hashtag\",\"tag\":\"\xff\"}")), ErrInvalidUTF8, "")
	if st, _ := e.Stats(); st.Subscriptions != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := NewEngine(Config{Overflow: "sideways"})
	expectErr(t, err, ErrInvalidConfig, "")
	_, err = NewEngineJSON([]byte(`{"no_such_key":1}`))
	expectErr(t, err, ErrInvalidConfig, "")
	_, err = NewEngineJSON([]byte(`{`))
	expectErr(t, err, ErrInvalidJSON, "")
	e := newEngine(t, Config{})
	_, err = e.NewSubscriber(SubscriberOptions{Overflow: "sideways"})
	expectErr(t, err, ErrInvalidConfig, "")
	s := newSub(t, e, SubscriberOptions{})
	expectErr(t, s.UpdateJSON([]byte(`{"account":"1"}`)), ErrInvalidConfig, "")
}

func TestNullAndPanicStatuses(t *testing.T) {
	// The Go API never passes NULL; check the status mapping through the raw ABI.
	expectErr(t, rawSubscribeNull(), ErrNull, "")
	if (&Error{StatusPanic, "x"}).Is(ErrPanic) != true || errors.Is(&Error{StatusPanic, "x"}, ErrNull) {
		t.Fatal("Is compares statuses")
	}
}

func TestIOErrorWhenNoFdIsLeft(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{})
	probe, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(probe)
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old)
	low := old
	low.Cur = uint64(probe) // no new fd can be created
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot lower RLIMIT_NOFILE:", err)
	}
	_, err = s.Fd()
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	expectErr(t, err, ErrIO, "")
	if fd, err := s.Fd(); err != nil || fd < 0 {
		t.Fatal(fd, err)
	}
}

func TestUseAfterClose(t *testing.T) {
	e := newEngine(t, Config{})
	s, _ := e.NewSubscriber(SubscriberOptions{})
	s.Close()
	s.Close()
	_, err := s.Next(0)
	expectErr(t, err, ErrClosed, "closed")
	expectErr(t, s.Subscribe(Subscription{Stream: "public"}), ErrClosed, "")
	_, err = s.Stats()
	expectErr(t, err, ErrClosed, "")
	_, err = s.Fd()
	expectErr(t, err, ErrClosed, "")
	e.Close()
	e.Close()
	_, err = e.Publish([]byte(`{}`))
	expectErr(t, err, ErrClosed, "engine is closed")
	_, err = e.NewSubscriber(SubscriberOptions{})
	expectErr(t, err, ErrClosed, "engine is closed")
}
