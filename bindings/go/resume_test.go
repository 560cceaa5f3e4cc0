package evroute

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

var public = Subscription{Stream: "public"}

func historyEngine(t *testing.T, maxEvents int) *Engine {
	t.Helper()
	e, err := NewEngine(Config{QueueCapacity: 100000, History: &HistoryConfig{MaxEvents: maxEvents, MaxAgeSecs: 600}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func subscribed(t *testing.T, e *Engine, opts SubscriberOptions) *Subscriber {
	t.Helper()
	s, err := e.NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(public); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func publishUpdate(t testing.TB, e *Engine, n int) {
	msg := fmt.Sprintf(`{"event":"update","payload":{"id":"%d","visibility":"public","language":"en","account":{"id":"9","acct":"nine"}}}`, n)
	if _, err := e.PublishChannel("timeline:public", []byte(msg)); err != nil {
		t.Error(err)
	}
}

func drainAll(t testing.TB, s *Subscriber) []*Frame {
	var out []*Frame
	for {
		f, err := s.Next(0)
		if err != nil {
			t.Fatal(err)
		}
		if f == nil {
			return out
		}
		out = append(out, f)
	}
}

func sameFrames(t *testing.T, got, want []*Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || string(got[i].SSE) != string(want[i].SSE) || string(got[i].WS) != string(want[i].WS) {
			t.Fatalf("frame %d: %s %q, want %s %q", i, got[i].ID, got[i].SSE, want[i].ID, want[i].SSE)
		}
	}
}

func TestFrameIDs(t *testing.T) {
	off, err := NewEngine(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	on := historyEngine(t, 10)
	plain := subscribed(t, off, SubscriberOptions{})
	quiet := subscribed(t, on, SubscriberOptions{})
	ided := subscribed(t, on, SubscriberOptions{EventIDs: true})
	publishUpdate(t, off, 1)
	publishUpdate(t, on, 1)
	p, q, i := drainAll(t, plain)[0], drainAll(t, quiet)[0], drainAll(t, ided)[0]
	if p.ID != "" || q.ID == "" || q.ID != i.ID || !strings.HasSuffix(q.ID, ":1") {
		t.Fatalf("ids %q %q %q", p.ID, q.ID, i.ID)
	}
	if string(p.SSE) != string(q.SSE) || string(p.WS) != string(q.WS) {
		t.Fatal("without EventIDs the bytes must be those of an engine without history")
	}
	if string(i.SSE) != "id: "+q.ID+"\n"+string(q.SSE) {
		t.Fatalf("SSE %q", i.SSE)
	}
	if string(i.WS) != strings.TrimSuffix(string(q.WS), "}")+`,"id":"`+q.ID+`"}` {
		t.Fatalf("WS %s", i.WS)
	}
	st, err := on.Stats()
	if err != nil || st.HistoryEntries != 1 || st.HistoryBytes == 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func TestResumeAndGaps(t *testing.T) {
	e := historyEngine(t, 3)
	twin := subscribed(t, e, SubscriberOptions{})
	first := subscribed(t, e, SubscriberOptions{})
	for n := 0; n < 3; n++ {
		publishUpdate(t, e, n)
	}
	seen := drainAll(t, first)[:1]
	first.Close()
	publishUpdate(t, e, 3)
	second := subscribed(t, e, SubscriberOptions{})
	if gap, err := second.Resume(seen[0].ID); gap || err != nil {
		t.Fatalf("resume: gap %v, %v", gap, err)
	}
	publishUpdate(t, e, 4)
	seen = append(seen, drainAll(t, second)...)
	all := drainAll(t, twin)
	sameFrames(t, seen, all)

	third := subscribed(t, e, SubscriberOptions{})
	if gap, err := third.Resume(all[0].ID); !gap || err != nil {
		t.Fatalf("history of 3 cannot reach back 4 events: gap %v, %v", gap, err)
	}
	sameFrames(t, drainAll(t, third), all[2:])

	for _, bad := range []string{"", "7", "x:", "x:y"} {
		if _, err := third.Resume(bad); !errors.Is(err, ErrInvalidID) {
			t.Fatalf("Resume(%q): %v", bad, err)
		}
	}
}

func TestResumeWhileGoroutinesPublish(t *testing.T) {
	e := historyEngine(t, 100000)
	twin := subscribed(t, e, SubscriberOptions{EventIDs: true})
	conn := subscribed(t, e, SubscriberOptions{EventIDs: true})
	publishUpdate(t, e, -1)
	var seen []*Frame
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for n := 0; n < 500; n++ {
				publishUpdate(t, e, g*1000+n)
			}
		}(g)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for i := 0; i < 30; i++ {
			f, err := conn.Next(time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if f != nil {
				seen = append(seen, f)
			}
		}
		if !running || len(seen) == 0 {
			continue
		}
		conn.Close()
		conn = subscribed(t, e, SubscriberOptions{EventIDs: true})
		if gap, err := conn.Resume(seen[len(seen)-1].ID); gap || err != nil {
			t.Fatalf("resume: gap %v, %v", gap, err)
		}
	}
	seen = append(seen, drainAll(t, conn)...)
	sameFrames(t, seen, drainAll(t, twin))
	if len(seen) != 2001 {
		t.Fatalf("%d frames", len(seen))
	}
}
