package evroute

/*
#include "evroute.h"
*/
import "C"

import (
	"runtime"
	"sync"
)

// ReadySet is one readiness fd for many subscribers: attach each with a
// token of your choice (AttachReadySet), wait on the set (Wait, in Go's
// poller), and Take the tokens of the subscribers that have frames or were
// closed. The rule (docs/protocol.md, "Ready sets"): after taking a token,
// Drain its subscriber until Batch.Emptied (or ErrClosed); if you stop
// earlier (a socket that would block), coming back to it is yours, as no
// new token comes while frames are left. A token may come for a queue
// that is already empty; Take never returns the token of a subscriber
// closed with Close before the Take began.
//
// Wait and Take are for one goroutine at a time (the writer of the set);
// AttachReadySet may be called from any.
type ReadySet struct {
	poller
	mu  sync.RWMutex // calls hold it shared; Close holds it exclusively to free
	ptr *C.evr_ready_set
}

// NewReadySet creates a ready set and puts its fd into Go's poller.
func NewReadySet() (*ReadySet, error) {
	var ptr *C.evr_ready_set
	if _, err := call(func() C.int { return C.int(C.evr_ready_set_new(&ptr)) }); err != nil {
		return nil, err
	}
	var fd C.int
	if _, err := call(func() C.int { return C.int(C.evr_ready_set_fd(ptr, &fd)) }); err != nil {
		C.evr_ready_set_free(ptr)
		return nil, err
	}
	s := &ReadySet{ptr: ptr}
	if err := s.poller.init(int(fd)); err != nil {
		C.evr_ready_set_free(ptr)
		return nil, err
	}
	return s, nil
}

// Take moves up to len(tokens) listed tokens into tokens, oldest first,
// and returns how many (0: none listed). One cgo call, no allocation.
func (s *ReadySet) Take(tokens []uint64) (int, error) {
	if len(tokens) == 0 {
		return 0, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return 0, &Error{StatusClosed, "ready set closed"}
	}
	var n C.size_t
	// tokens is Go memory without Go pointers: C may write it during the call.
	_, err := call(func() C.int {
		return C.int(C.evr_ready_set_take(s.ptr, (*C.uint64_t)(&tokens[0]), C.size_t(len(tokens)), &n))
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// Close leaves Go's poller and releases the set; subscribers still
// attached keep the engine's side of it until they are closed. Safe to
// call twice.
func (s *ReadySet) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil
	}
	err := s.poller.Close()
	C.evr_ready_set_free(s.ptr)
	s.ptr = nil
	return err
}

// AttachReadySet attaches the subscriber to set under token (unique within
// the set): from now on its frames list token in the set instead of
// making a readiness fd of its own readable. An error (ErrInvalidConfig,
// naming the problem) when the token is taken, the subscriber is already
// attached, or its own fd (Fd, NewWaiter) was asked for.
func (s *Subscriber) AttachReadySet(set *ReadySet, token uint64) error {
	ptr, err := s.use()
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	set.mu.RLock()
	defer set.mu.RUnlock()
	if set.ptr == nil {
		return &Error{StatusClosed, "ready set closed"}
	}
	_, err = call(func() C.int { return C.int(C.evr_subscriber_attach_ready_set(ptr, set.ptr, C.uint64_t(token))) })
	runtime.KeepAlive(s)
	return err
}
