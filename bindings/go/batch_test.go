package evroute

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// publishStatuses publishes the public corpus statuses `rounds` times and
// returns the SSE and WebSocket bytes each `public` subscriber must get,
// built from the corpus and SPEC §4.
func publishStatuses(t *testing.T, e *Engine, rounds int) (sse, ws [][]byte) {
	t.Helper()
	for r := 0; r < rounds; r++ {
		for _, prefix := range []string{"07", "08", "11", "14"} {
			doc := corpus(t, mastodon(t, prefix))
			if mustPublish(t, e, doc).Delivered == 0 {
				t.Fatalf("corpus %s does not reach public", prefix)
			}
			payload := payloadOf(t, doc)
			sse = append(sse, sseBytes(eventName(t, doc), payload))
			ws = append(ws, wsBytes([]string{"public"}, eventName(t, doc), payload))
		}
	}
	return sse, ws
}

func TestDrainCopiesWholeFramesInOrder(t *testing.T) {
	e := newEngine(t, Config{})
	for _, enc := range []Encoding{EncodingSSE, EncodingWS} {
		s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
		sse, ws := publishStatuses(t, e, 3)
		want := sse
		if enc == EncodingWS {
			want = ws
		}
		// Room for one or two frames and at most 3 per call: several calls.
		b := NewBatch(len(want[0])*3/2, 3)
		var got [][]byte
		for {
			n, err := s.Drain(b, enc, 0)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if n != b.Len() || n > 3 {
				t.Fatalf("drain: %d frames, batch of %d, %d bytes", n, b.Len(), len(b.Buf))
			}
			// The frames tile Buf: no gap, overlap, or trailing bytes.
			sum := 0
			for i := 0; i < n; i++ {
				if len(b.Frame(i)) == 0 {
					t.Fatalf("drain: frame %d of %d is empty (ends %v)", i, n, b.Ends)
				}
				sum += len(b.Frame(i))
				got = append(got, append([]byte(nil), b.Frame(i)...))
			}
			if len(b.Buf) != sum {
				t.Fatalf("drain: %d bytes in Buf, frames hold %d (ends %v)", len(b.Buf), sum, b.Ends)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("encoding %d: %d frames, want %d", enc, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("encoding %d frame %d:\n got %.80s\nwant %.80s", enc, i, got[i], want[i])
			}
		}
		if st, _ := s.Stats(); st.Read != uint64(len(want)) || st.Depth != 0 {
			t.Fatalf("stats %+v", st)
		}
	}
}

func TestDrainGrowsForAFrameLargerThanTheBuffer(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	sse, _ := publishStatuses(t, e, 1)
	b := NewBatch(8, 0)
	n, err := s.Drain(b, EncodingSSE, 0)
	if err != nil || n != 1 || !bytes.Equal(b.Frame(0), sse[0]) {
		t.Fatalf("n=%d err=%v frame %.40q", n, err, b.Buf)
	}
	if cap(b.Buf) < len(sse[0]) {
		t.Fatalf("buffer not grown: %d", cap(b.Buf))
	}
}

func TestDrainWaitsAndReportsClosed(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	var b Batch // the zero Batch works too
	start := time.Now()
	if n, err := s.Drain(&b, EncodingWS, 20*time.Millisecond); n != 0 || err != nil {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if waited := time.Since(start); waited < 15*time.Millisecond {
		t.Fatalf("returned after %v, before the timeout", waited)
	}
	event := corpus(t, mastodon(t, "11"))
	go func() {
		time.Sleep(10 * time.Millisecond)
		e.Publish(event) // checked by the Drain below
	}()
	if n, err := s.Drain(&b, EncodingWS, 5*time.Second); n == 0 || err != nil {
		t.Fatalf("n=%d err=%v", n, err)
	}
	s.Close()
	if _, err := s.Drain(&b, EncodingSSE, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	slow := newSub(t, e, SubscriberOptions{QueueCapacity: 1, Overflow: "disconnect"}, Subscription{Stream: "public"})
	mustPublish(t, e, event)
	mustPublish(t, e, event) // overflows the queue of 1
	var closed *Error
	if _, err := slow.Drain(&b, EncodingSSE, 0); !errors.As(err, &closed) || closed.Message != "slow consumer" {
		t.Fatalf("slow consumer: %v", err)
	}
}

// waitReturned fails unless a Wait running on another goroutine returns
// nil (through woke) within 5 s of a publish.
func waitReturned(t *testing.T, woke <-chan error) {
	t.Helper()
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after a publish")
	}
}

func TestWaiterParksUntilFramesWait(t *testing.T) {
	e := newEngine(t, Config{})
	s := newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
	w, err := s.NewWaiter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Wait(time.Now().Add(10 * time.Millisecond)); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("empty queue: %v", err)
	}
	woke := make(chan error, 1)
	go func() { woke <- w.Wait(time.Time{}) }()
	time.Sleep(10 * time.Millisecond)
	select { // the queue is empty: Wait must still be parked
	case err := <-woke:
		t.Fatalf("Wait returned before a publish: %v", err)
	default:
	}
	publishStatuses(t, e, 2)
	waitReturned(t, woke)
	// A partial drain leaves frames: the next Wait returns at once, although
	// no new frame arrived (level-triggered over an edge-triggered poller).
	b := NewBatch(1<<20, 1)
	if n, err := s.Drain(b, EncodingSSE, 0); n != 1 || err != nil {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if err := w.Wait(time.Now().Add(time.Second)); err != nil {
		t.Fatalf("frames left, yet: %v", err)
	}
	for {
		if n, _ := s.Drain(b, EncodingSSE, 0); n == 0 {
			break
		}
	}
	if err := w.Wait(time.Now().Add(10 * time.Millisecond)); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("drained, yet: %v", err)
	}
	go func() { woke <- w.Wait(time.Time{}) }()
	time.Sleep(10 * time.Millisecond)
	select { // nothing waits and nobody woke it: Wait must still be parked
	case err := <-woke:
		t.Fatalf("Wait returned before Wake: %v", err)
	default:
	}
	w.Wake()
	if err := <-woke; !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("Wake: %v", err)
	}
	s.Close()
	if err := w.Wait(time.Now().Add(time.Second)); err != nil {
		t.Fatalf("closed subscriber must be readable: %v", err)
	}
}

// benchmarkDrain publishes 64 frames per iteration (untimed) and times
// taking them with take, which returns how many it took.
func benchmarkDrain(b *testing.B, take func(*Subscriber) int) {
	e := newEngine(b, Config{QueueCapacity: 64})
	s := newSub(b, e, SubscriberOptions{}, Subscription{Stream: "public"})
	event := corpus(b, mastodon(b, "11"))
	b.ReportAllocs()
	frames := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := 0; j < 64; j++ {
			if _, err := e.Publish(event); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if n := take(s); n != 64 {
			b.Fatalf("took %d frames", n)
		}
		frames += 64
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
}

// BenchmarkDrainSSE is the Go side of issue 13's batch drain: one cgo call
// copies 64 frames' SSE bytes into a reused buffer.
func BenchmarkDrainSSE(b *testing.B) {
	batch := NewBatch(1<<20, 64)
	benchmarkDrain(b, func(s *Subscriber) int {
		n, err := s.Drain(batch, EncodingSSE, 0)
		if err != nil {
			b.Fatal(err)
		}
		return n
	})
}

// BenchmarkNextSSE is the same with Next per frame (a cgo call, a Frame with
// every field copied, and JSON decoding of the stream), for the ratio.
func BenchmarkNextSSE(b *testing.B) {
	out := make([]byte, 0, 1<<20)
	benchmarkDrain(b, func(s *Subscriber) int {
		out = out[:0]
		n := 0
		for {
			f, err := s.Next(0)
			if err != nil {
				b.Fatal(err)
			}
			if f == nil {
				return n
			}
			out = append(out, f.SSE...)
			n++
		}
	})
}
