package evroute

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGoroutinesPublishWhileOthersDrain(t *testing.T) {
	const publishers, drainers, perPublisher = 4, 4, 2000
	e := newEngine(t, Config{QueueCapacity: 64})
	subs := make([]*Subscriber, drainers)
	for i := range subs {
		subs[i] = newSub(t, e, SubscriberOptions{QueueCapacity: publishers * perPublisher}, Subscription{Stream: "public"})
	}
	idle := newSub(t, e, SubscriberOptions{QueueCapacity: 8}, Subscription{Stream: "public"})
	received := make([][]string, drainers)
	errs := make(chan error, publishers+drainers)
	var wg sync.WaitGroup
	for k := range subs {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for len(received[k]) < publishers*perPublisher {
				f, err := subs[k].Next(5 * time.Second)
				if err != nil || f == nil {
					errs <- fmt.Errorf("drainer %d: %v %v", k, f, err)
					return
				}
				received[k] = append(received[k], f.Payload)
			}
		}(k)
	}
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < perPublisher; i++ {
				st, err := e.PublishChannel("timeline:public", []byte(fmt.Sprintf(`{"event":"delete","payload":"%d-%d"}`, p, i)))
				if err != nil || st.Matched != drainers+1 {
					errs <- fmt.Errorf("publisher %d: %+v %v", p, st, err)
					return
				}
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []string
	for p := 0; p < publishers; p++ {
		for i := 0; i < perPublisher; i++ {
			want = append(want, fmt.Sprintf("%d-%d", p, i))
		}
	}
	sort.Strings(want)
	for k, got := range received {
		next := make([]int, publishers) // each publisher's frames arrive in its order
		for _, payload := range got {
			parts := strings.SplitN(payload, "-", 2)
			p, _ := strconv.Atoi(parts[0])
			i, _ := strconv.Atoi(parts[1])
			if i != next[p] {
				t.Fatalf("drainer %d: publisher %d's frame %d arrived when %d was due", k, p, i, next[p])
			}
			next[p]++
		}
		sorted := append([]string(nil), got...)
		sort.Strings(sorted)
		if strings.Join(sorted, ",") != strings.Join(want, ",") {
			t.Fatalf("drainer %d: frames lost or duplicated", k)
		}
	}
	st, _ := e.Stats()
	total := uint64(publishers * perPublisher)
	is, _ := idle.Stats()
	if st.Published != total || st.Matched != total*(drainers+1) || st.Delivered != st.Matched ||
		is.Depth != 8 || is.Dropped != total-8 || st.Dropped != is.Dropped {
		t.Fatalf("engine %+v idle %+v", st, is)
	}
}

func TestCloseWakesBlockedNext(t *testing.T) {
	e := newEngine(t, Config{})
	s, _ := e.NewSubscriber(SubscriberOptions{})
	done := make(chan error)
	go func() {
		_, err := s.Next(time.Hour)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Close took too long")
	}
}

func TestCloseRacesWithReadersAndPublishers(t *testing.T) {
	for round := 0; round < 20; round++ {
		e := newEngine(t, Config{})
		s, err := e.NewSubscriber(SubscriberOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(Subscription{Stream: "public"}); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var frames atomic.Int64 // frames Next returned during the race
		var wg sync.WaitGroup
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					f, err := s.Next(10 * time.Millisecond)
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						return
					}
					if f != nil {
						frames.Add(1)
					}
					if _, err := s.Stats(); err != nil && !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
				}
			}()
		}
		var pubs sync.WaitGroup
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for {
				select {
				case <-stop:
					return
				default:
					if _, err := e.PublishChannel("timeline:public", []byte(`{"event":"delete","payload":"1"}`)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
		// Close only once the readers are really reading: a frame came through.
		time.Sleep(10 * time.Millisecond)
		for deadline := time.Now().Add(5 * time.Second); frames.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no Next returned a frame in 5 s", round)
			}
		}
		for c := 0; c < 3; c++ {
			wg.Add(1)
			go func() { defer wg.Done(); s.Close() }()
		}
		wg.Wait()
		close(stop)
		pubs.Wait()
		if st, err := e.Stats(); err != nil || st.Subscribers != 0 {
			t.Fatalf("%+v %v", st, err)
		}
		e.Close()
	}
}

func TestFinalizersFreeUnclosedHandles(t *testing.T) {
	e := newEngine(t, Config{})
	subs := make([]*Subscriber, 0, 100)
	for i := 0; i < 100; i++ {
		s, err := e.NewSubscriber(SubscriberOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(Subscription{Stream: "public"}); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	// All 100 are live while reachable (no finalizer can run yet) ...
	if st, err := e.Stats(); err != nil || st.Subscribers != 100 || st.Subscriptions != 100 {
		t.Fatalf("before GC: %+v %v", st, err)
	}
	runtime.KeepAlive(subs) // ... and unreachable, never closed, from here on.
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		st, err := e.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Subscribers == 0 && st.Subscriptions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("finalizers did not free: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFramesOutliveHandles(t *testing.T) {
	e, _ := NewEngine(Config{})
	s, _ := e.NewSubscriber(SubscriberOptions{})
	s.Subscribe(Subscription{Stream: "public"})
	mustPublish(t, e, corpus(t, mastodon(t, "08")))
	e.Close()
	f, err := s.Next(0)
	s.Close()
	runtime.GC()
	if err != nil || f == nil || f.Event != "update" || !strings.HasPrefix(string(f.SSE), "event: update\ndata: {") {
		t.Fatal(f, err)
	}
}

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		t.Fatalf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || pages <= 0 {
		t.Fatalf("/proc/self/statm resident pages %q: %d %v", fields[1], pages, err)
	}
	return pages * int64(os.Getpagesize())
}

func cycle(t *testing.T, doc []byte, k int) {
	e, err := NewEngine(Config{QueueCapacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := e.NewSubscriber(SubscriberOptions{Account: strconv.Itoa(k)})
	s.Subscribe(Subscription{Stream: "public"})
	if k%16 == 0 {
		e.Publish(doc) // a full corpus status now and then; cheap channel publishes otherwise
	} else {
		e.PublishChannel("timeline:public", []byte(`{"event":"delete","payload":"`+strconv.Itoa(k)+`"}`))
	}
	if f, err := s.Next(0); f == nil || err != nil {
		t.Fatal(f, err)
	}
	if k%2 == 1 {
		s.Close()
		e.Close()
	} // else the finalizers free them
}

func TestNoLeakOver100kCreateFreeCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	doc := corpus(t, mastodon(t, "08"))
	// Half the handles are left to finalizers. C memory is invisible to the Go
	// GC pacer, so collect every 1000 cycles to bound what waits for them; a
	// handle that a finalizer failed to free would add ~300 MB (6 KB x 50k).
	run := func(n int) {
		for k := 0; k < n; k++ {
			cycle(t, doc, k)
			if k%1000 == 999 {
				runtime.GC()
			}
		}
		for i := 0; i < 3; i++ {
			runtime.GC() // runs the finalizers of the last round
			time.Sleep(20 * time.Millisecond)
		}
	}
	run(50000) // reaches the allocators' high-water mark
	before := rssBytes(t)
	run(100000)
	grown := rssBytes(t) - before
	t.Logf("RSS growth over 100k cycles: %d KiB", grown/1024)
	if grown > 16<<20 { // catches leaks of 160+ bytes per cycle
		t.Fatalf("RSS grew by %d KiB", grown/1024)
	}
}
