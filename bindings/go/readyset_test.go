package evroute

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// A writer loop on a ReadySet: Wait, Take, Drain each token's subscriber
// until Emptied. Every subscriber gets every frame, in order, and a
// partly drained subscriber (stopped early by a one-frame batch) gets no
// second token until it was emptied.
func TestReadySetHandsOutSubscribersWithFrames(t *testing.T) {
	e := newEngine(t, Config{})
	set, err := NewReadySet()
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	subs := make([]*Subscriber, 3)
	for i := range subs {
		subs[i] = newSub(t, e, SubscriberOptions{}, Subscription{Stream: "public"})
		if err := subs[i].AttachReadySet(set, uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Wait(time.Now().Add(10 * time.Millisecond)); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("nothing published, yet: %v", err)
	}
	woke := make(chan error, 1)
	go func() { woke <- set.Wait(time.Time{}) }()
	want, _ := publishStatuses(t, e, 2)
	waitReturned(t, woke)

	tokens := make([]uint64, 2)
	var order []uint64
	for {
		n, err := set.Take(tokens)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		order = append(order, tokens[:n]...)
	}
	if len(order) != 3 || order[0] != 100 || order[1] != 101 || order[2] != 102 {
		t.Fatalf("tokens %v, want each subscriber once, in the order they filled", order)
	}
	if err := set.Wait(time.Now().Add(10 * time.Millisecond)); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("all tokens taken, yet: %v", err)
	}

	one := NewBatch(1<<20, 1)
	for i, s := range subs {
		var got [][]byte
		for {
			n, err := s.Drain(one, EncodingSSE, 0)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, append([]byte(nil), one.Buf...))
			if n != 1 {
				t.Fatalf("subscriber %d: %d frames in a one-frame batch", i, n)
			}
			if one.Emptied {
				break
			}
			if n, _ := set.Take(tokens); n != 0 {
				t.Fatalf("subscriber %d: token %d while frames are left", i, tokens[0])
			}
		}
		if !bytes.Equal(bytes.Join(got, nil), bytes.Join(want, nil)) {
			t.Fatalf("subscriber %d: frames differ", i)
		}
		if n, err := s.Drain(one, EncodingSSE, 0); n != 0 || err != nil || !one.Emptied {
			t.Fatalf("drained: n=%d err=%v emptied=%v", n, err, one.Emptied)
		}
	}

	// Emptied: the next frame lists the token again; closing lists it too.
	publishStatuses(t, e, 1)
	if n, _ := set.Take(tokens[:1]); n != 1 {
		t.Fatal("no token after the queues were emptied")
	}
	subs[2].Close()
	if n, _ := set.Take(tokens); n != 1 || tokens[0] != 101 {
		t.Fatalf("closed subscriber 102 came out of Take: %v", tokens[:n])
	}
}

func TestReadySetAttachErrors(t *testing.T) {
	e := newEngine(t, Config{})
	set, err := NewReadySet()
	if err != nil {
		t.Fatal(err)
	}
	a := newSub(t, e, SubscriberOptions{})
	b := newSub(t, e, SubscriberOptions{})
	if err := a.AttachReadySet(set, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{a.AttachReadySet(set, 2), "already attached to a ready set"},
		{b.AttachReadySet(set, 1), "token 1 is already attached"},
	} {
		if !errors.Is(c.err, ErrInvalidConfig) || !strings.Contains(c.err.Error(), c.want) {
			t.Fatalf("got %v, want %q", c.err, c.want)
		}
	}
	if _, err := a.Fd(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Fd of an attached subscriber: %v", err)
	}
	if _, err := b.Fd(); err != nil {
		t.Fatal(err)
	}
	if err := b.AttachReadySet(set, 2); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "own readiness fd") {
		t.Fatalf("attach after Fd: %v", err)
	}
	set.Close()
	set.Close()
	if _, err := set.Take(make([]uint64, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Take after Close: %v", err)
	}
	if err := newSub(t, e, SubscriberOptions{}).AttachReadySet(set, 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("attach to a closed set: %v", err)
	}
}
