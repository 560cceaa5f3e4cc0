package main

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Clients that subscribed wait for one round of the node's wait that began
// after they came: those that come while a round runs share the next one,
// and rounds never overlap.
func TestSyncWaiterSharesRounds(t *testing.T) {
	var rounds, running atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	s := &syncWaiter{waitNode: func() {
		if running.Add(1) != 1 {
			t.Error("rounds overlap")
		}
		rounds.Add(1)
		started <- struct{}{}
		<-release
		running.Add(-1)
	}}
	first := make(chan struct{})
	go func() { s.wait(); close(first) }()
	<-started // round 1, for the first client
	var done atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.wait(); done.Add(1) }()
	}
	time.Sleep(200 * time.Millisecond) // they come during round 1
	release <- struct{}{}
	<-first
	<-started // round 2, for the ten
	time.Sleep(50 * time.Millisecond)
	if n := done.Load(); n != 0 {
		t.Fatalf("%d clients returned before the round that covers them ended", n)
	}
	release <- struct{}{}
	wg.Wait()
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d rounds for two groups of clients", n)
	}
	// Nobody waits: the goroutine ends, and the next client starts another.
	go func() { <-started; release <- struct{}{} }()
	s.wait()
	if n := rounds.Load(); n != 3 {
		t.Fatalf("%d rounds", n)
	}
}
