package streaming

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// watchSet is one epoll set for the whole process, waited on by one
// goroutine through Go's poller (no thread held), which calls a function
// when a watched fd has an event. It lets idle connections hold no
// goroutine of their own: it notices SSE clients that go away (each
// hijacked socket with EPOLLRDHUP; EPOLLHUP and EPOLLERR come unasked),
// and input on parked WebSocket readers' sockets (see ws.go). A goroutine
// blocked per connection would cost a stack and scheduler state for every
// idle client; an entry here costs a map slot.
type watchSet struct {
	once sync.Once
	raw  syscall.RawConn // the epoll set; nil when it could not be made
	epfd int

	mu      sync.Mutex
	next    uint64
	entries map[uint64]watchEntry
}

type watchEntry struct {
	fire func()
	once bool // forgotten when it fires
}

var watches watchSet

func (w *watchSet) start() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	// Non-blocking, so os.NewFile puts the set in Go's poller: it polls
	// readable while a watched fd has an event.
	if syscall.SetNonblock(fd, true) != nil {
		syscall.Close(fd)
		return
	}
	raw, err := os.NewFile(uintptr(fd), "evroute-watches").SyscallConn()
	if err != nil {
		return
	}
	w.raw, w.epfd, w.entries = raw, fd, map[uint64]watchEntry{}
	go w.loop()
}

// controller is what gives access to an fd: a syscall.RawConn.
type controller interface {
	Control(f func(fd uintptr)) error
}

// add watches the fd of rc for events (EPOLLONESHOT included: the event's
// data is a key never reused, so an event of an fd removed meanwhile finds
// nothing); fire runs on the set's goroutine, so it must not block. once:
// the entry is forgotten when it fires. 0: not watched.
func (w *watchSet) add(rc controller, events uint32, once bool, fire func()) uint64 {
	if w.once.Do(w.start); w.raw == nil {
		return 0
	}
	w.mu.Lock()
	if w.entries == nil { // the set failed
		w.mu.Unlock()
		return 0
	}
	w.next++
	key := w.next
	w.entries[key] = watchEntry{fire, once}
	w.mu.Unlock()
	if w.ctl(rc, syscall.EPOLL_CTL_ADD, key, events) != nil {
		w.forget(key)
		return 0
	}
	return key
}

// arm watches a key's fd for events again (after a one-shot event).
func (w *watchSet) arm(rc controller, key uint64, events uint32) error {
	return w.ctl(rc, syscall.EPOLL_CTL_MOD, key, events)
}

// remove stops watching a key's fd; call it before closing the fd.
func (w *watchSet) remove(rc controller, key uint64) {
	if key != 0 && w.forget(key) {
		_ = rc.Control(func(fd uintptr) { _ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	}
}

func (w *watchSet) ctl(rc controller, op int, key uint64, events uint32) error {
	ev := syscall.EpollEvent{Events: events | syscall.EPOLLONESHOT, Fd: int32(key), Pad: int32(key >> 32)}
	var ctlErr error
	if err := rc.Control(func(fd uintptr) { ctlErr = syscall.EpollCtl(w.epfd, op, int(fd), &ev) }); err != nil {
		return err
	}
	return ctlErr
}

// forget removes a key; false when it had already fired (once) or gone.
func (w *watchSet) forget(key uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.entries[key]
	delete(w.entries, key)
	return ok
}

// watchClose calls gone once nc's peer closes or resets the connection,
// until the returned function stops watching (call it before closing nc).
// It returns nil when nc cannot be watched (not a socket of this process's
// own, such as a TLS connection); the caller then reads to find out.
func watchClose(nc net.Conn, gone func()) (unwatch func()) {
	rc, key := watchConn(nc, syscall.EPOLLRDHUP, true, gone)
	if key == 0 {
		return nil
	}
	return func() { watches.remove(rc, key) }
}

// watchConn adds nc's socket to the set; key 0 when it cannot be watched.
func watchConn(nc net.Conn, events uint32, once bool, fire func()) (syscall.RawConn, uint64) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, 0
	}
	return rc, watches.add(rc, events, once, fire)
}

func (w *watchSet) loop() {
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
			// Not expected (the set is never closed). Later connections
			// fall back to goroutines of their own; watched ones end on a
			// failed write.
			w.mu.Lock()
			w.entries = nil
			w.mu.Unlock()
			return
		}
		for _, ev := range evs[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w.mu.Lock()
			e, ok := w.entries[key]
			if ok && e.once {
				delete(w.entries, key)
			}
			w.mu.Unlock()
			if ok {
				e.fire()
			}
		}
	}
}

// readWatch watches a socket for input while its reader is parked: fire
// runs on the set's goroutine (so it must not block) when the socket is
// readable or its peer went away, once per arm.
type readWatch struct {
	rc  syscall.RawConn
	key uint64
}

// watchReads registers nc disarmed; nil when it cannot be watched (not a
// socket of this process's own), and the caller then reads on a goroutine.
func watchReads(nc net.Conn, fire func()) *readWatch {
	rc, key := watchConn(nc, 0, false, fire)
	if key == 0 {
		return nil
	}
	return &readWatch{rc, key}
}

// arm lets the next input (or one already waiting) fire.
func (r *readWatch) arm() error {
	return watches.arm(r.rc, r.key, syscall.EPOLLIN|syscall.EPOLLRDHUP)
}

// remove stops watching; call it before closing the socket. Idempotent.
func (r *readWatch) remove() { watches.remove(r.rc, r.key) }
