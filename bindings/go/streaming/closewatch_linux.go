package streaming

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// closeWatch notices SSE clients that go away, for every stream of the
// process at once: one epoll set holds each hijacked socket with
// EPOLLRDHUP (the peer closed; EPOLLHUP and EPOLLERR come unasked), and one
// goroutine waits on that set through Go's poller (no thread held). A
// goroutine blocked in a read per connection would cost a stack and
// scheduler state for every idle client; an entry here costs a map slot.
type closeWatch struct {
	once sync.Once
	raw  syscall.RawConn // the epoll set; nil when it could not be made
	epfd int

	mu   sync.Mutex
	next uint64
	gone map[uint64]func()
}

var closes closeWatch

func (w *closeWatch) start() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	// Non-blocking, so os.NewFile puts the set in Go's poller: it polls
	// readable while a watched socket has an event.
	if syscall.SetNonblock(fd, true) != nil {
		syscall.Close(fd)
		return
	}
	raw, err := os.NewFile(uintptr(fd), "evroute-closes").SyscallConn()
	if err != nil {
		return
	}
	w.raw, w.epfd, w.gone = raw, fd, map[uint64]func(){}
	go w.loop()
}

// watch calls gone once nc's peer closes or resets the connection, until
// the returned function stops watching (call it before closing nc). It
// returns nil when nc cannot be watched (not a socket of this process's
// own, such as a TLS connection); the caller then reads to find out.
func (w *closeWatch) watch(nc net.Conn, gone func()) (unwatch func()) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if w.once.Do(w.start); err != nil || w.raw == nil {
		return nil
	}
	w.mu.Lock()
	if w.gone == nil {
		w.mu.Unlock()
		return nil
	}
	w.next++
	key := w.next
	w.gone[key] = gone
	w.mu.Unlock()
	// One-shot: the first event ends the stream, so the socket needs no
	// re-arming; the event's data is the key, never reused, so an event
	// of a socket that was unwatched meanwhile finds nothing.
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(key), Pad: int32(key >> 32)}
	var ctlErr error
	if err = rc.Control(func(fd uintptr) {
		ctlErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); err == nil {
		err = ctlErr
	}
	if err != nil {
		w.forget(key)
		return nil
	}
	return func() {
		if w.forget(key) {
			_ = rc.Control(func(fd uintptr) { _ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
		}
	}
}

// forget removes a watch; false when it had already fired or gone.
func (w *closeWatch) forget(key uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.gone[key]
	delete(w.gone, key)
	return ok
}

func (w *closeWatch) loop() {
	var evs [128]syscall.EpollEvent
	for {
		n := 0
		var waitErr error
		err := w.raw.Read(func(fd uintptr) bool {
			for {
				n, waitErr = syscall.EpollWait(int(fd), evs[:], 0)
				if waitErr != syscall.EINTR {
					return waitErr != nil || n > 0 // nothing yet: wait in the poller
				}
			}
		})
		if err != nil || waitErr != nil {
			// Not expected (the set is never closed). Later streams fall
			// back to a reader; watched ones end on a failed write.
			w.mu.Lock()
			w.gone = nil
			w.mu.Unlock()
			return
		}
		for _, ev := range evs[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w.mu.Lock()
			gone := w.gone[key]
			delete(w.gone, key)
			w.mu.Unlock()
			if gone != nil {
				gone()
			}
		}
	}
}
