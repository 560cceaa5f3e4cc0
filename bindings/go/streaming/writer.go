package streaming

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
)

// Writers: GOMAXPROCS goroutines for the whole process, each waiting on
// its own evroute ReadySet in Go's poller. A connection is attached to one
// of them with a token; one wakeup hands a writer every connection of its
// set that has frames, and it drains and writes each in turn, so a delivery
// costs no eventfd, poller wakeup or goroutine switch of its own.
//
// The rules, between a writer, a connection's slow path and the engine:
//   - A token comes when a connection's queue goes from empty to non-empty
//     (or it closes). Whoever handles it drains until a drain reports the
//     queue emptied; then the next frame brings a new token.
//   - The writer writes without waiting (a non-blocking writev on the raw
//     socket) and only if it gets the wire's lock at once. When the socket
//     would block, the lock is taken, or the connection has no raw socket
//     (TLS, HTTP/2), the connection goes to its slow path: a goroutine of
//     its own that finishes the bytes left with the write timeout, keeping
//     the wire's lock so nothing else is written in between, and drains
//     until emptied with blocking writes.
//   - A stream's state says who owns it: idle (the writer, on its next
//     token), busy (the writer or the slow path, draining now), kicked
//     (busy, and a token or an end came meanwhile). The owner hands the
//     stream back with busy → idle; if that fails it was kicked and it
//     drains again, so no token is lost.
//   - Only the owner writes frames and only the owner finishes the stream
//     (finish: ticks stop, done runs), so done never runs while a batch is
//     being written. end (the connection stopped) marks the stream ending
//     and claims it if idle, or kicks its owner, whose next drain sees it.
type writer struct {
	set     *evroute.ReadySet
	mu      sync.Mutex // guards streams
	streams map[uint64]*stream
}

var writers struct {
	once sync.Once
	all  []*writer
	err  error
	next atomic.Uint64 // the last token handed out
}

// tokensPerTake is how many connections a writer takes per Take.
const tokensPerTake = 256

// startWriters starts the process's writers once.
func startWriters() error {
	writers.once.Do(func() {
		n := runtime.GOMAXPROCS(0)
		for i := 0; i < n; i++ {
			set, err := evroute.NewReadySet()
			if err != nil {
				writers.err = err
				return
			}
			w := &writer{set: set, streams: map[uint64]*stream{}}
			writers.all = append(writers.all, w)
			go w.loop()
		}
	})
	return writers.err
}

func (w *writer) loop() {
	tokens := make([]uint64, tokensPerTake)
	ready := make([]*stream, tokensPerTake)
	for {
		if err := w.set.Wait(time.Time{}); err != nil && !errors.Is(err, evroute.ErrWaitTimeout) {
			panic("streaming: a writer's ready set failed: " + err.Error())
		}
		for {
			n, err := w.set.Take(tokens)
			if err != nil {
				panic("streaming: a writer's ready set failed: " + err.Error())
			}
			if n == 0 {
				break
			}
			w.mu.Lock()
			for i, t := range tokens[:n] {
				ready[i] = w.streams[t]
			}
			w.mu.Unlock()
			for i, st := range ready[:n] {
				if st != nil {
					st.ready()
				}
				ready[i] = nil
			}
		}
	}
}

// Stream states (see the rules above).
const (
	stIdle int32 = iota
	stBusy
	stKicked
)

// stream is a connection's writing side: its frames, ticks and end.
type stream struct {
	h      *Handler
	c      *conn
	w      *wire
	raw    syscall.RawConn // nil: no raw socket, every batch takes the slow path
	ws     bool
	sent   prometheus.Counter
	token  uint64
	wr     *writer
	state  atomic.Int32
	ending atomic.Bool // end was called: the owner finishes

	tick       func() bool // heartbeat or ping; false: the connection is gone
	tickMu     sync.Mutex  // ticks run one at a time; guards ticksOver
	ticksOver  bool
	timer      *time.Timer
	finishOnce sync.Once
	done       func()
}

// stream starts writing the connection's frames, and tick every interval,
// until it ends; done then runs on a goroutine of its own.
func (h *Handler) stream(c *conn, w *wire, ws bool, interval time.Duration, tick func() bool, done func()) {
	st := &stream{h: h, c: c, w: w, raw: rawConn(w), ws: ws, sent: h.metrics.sent.WithLabelValues(c.kind),
		tick: tick, done: done, token: writers.next.Add(1)}
	st.wr = writers.all[st.token%uint64(len(writers.all))]
	st.wr.mu.Lock()
	st.wr.streams[st.token] = st
	st.wr.mu.Unlock()
	// Made stopped and started once assigned: the callback uses st.timer.
	st.timer = time.AfterFunc(time.Hour, func() {
		st.tickMu.Lock()
		defer st.tickMu.Unlock()
		if st.ticksOver || c.reason.Load() != stopNone {
			return
		}
		if !st.tick() {
			c.stop(stopGone)
			return
		}
		st.timer.Reset(interval)
	})
	st.timer.Stop()
	st.timer.Reset(interval)
	c.st.Store(st)
	// Frames already waiting list the token at once. A connection stopped
	// before this has no subscriber left to attach.
	if err := c.sub.AttachReadySet(st.wr.set, st.token); err != nil || c.reason.Load() != stopNone {
		if err != nil && !errors.Is(err, evroute.ErrClosed) {
			h.log.Error("attach failed", "err", err)
		}
		st.end()
	}
}

// ready handles a token on the writer's goroutine.
func (st *stream) ready() {
	if st.claim() {
		st.write()
	}
}

// claim makes the caller the owner if the stream is idle (true), or kicks
// its owner.
func (st *stream) claim() bool {
	for {
		switch s := st.state.Load(); {
		case s == stKicked:
			return false
		case s == stBusy:
			if st.state.CompareAndSwap(stBusy, stKicked) {
				return false
			}
		case st.state.CompareAndSwap(stIdle, stBusy):
			return true
		}
	}
}

// release hands the stream back after a drain emptied its queue; false
// when it was kicked meanwhile: the owner drains again.
func (st *stream) release() bool {
	if st.state.CompareAndSwap(stBusy, stIdle) {
		return true
	}
	st.state.Store(stBusy)
	return false
}

// write drains and writes without waiting until the queue is emptied, or
// leaves the stream (busy) to its slow path.
func (st *stream) write() {
	if st.raw == nil || !st.w.mu.TryLock() {
		go st.slow(nil)
		return
	}
	o := st.h.getBatch()
	for {
		n, err := st.drain(o)
		if err == nil && n > 0 {
			if st.ws {
				st.w.wsIOV(o)
			} else {
				st.w.sseIOV(o.Buf, o)
			}
			if err = tryWritev(st.raw, o); err == nil && len(o.iov) > 0 {
				go st.slow(o) // the socket would block: the rest, with the lock, to the slow path
				return
			}
			if err == nil {
				st.written(o)
			}
		}
		if err != nil || o.Emptied && st.release() {
			st.w.mu.Unlock()
			st.h.batches.Put(o)
			if err != nil {
				st.finish(err)
			}
			return
		}
	}
}

// slow finishes what o holds (the wire's lock held) and then drains with
// blocking writes until the queue is emptied, on a goroutine of its own;
// o == nil: nothing is held.
func (st *stream) slow(o *outBatch) {
	var err error
	if o != nil {
		full := o.iov
		err = st.w.writeLocked(&o.iov)
		o.iov = full[:0]
		st.w.mu.Unlock()
		if err == nil {
			st.written(o)
		}
	} else {
		o = st.h.getBatch()
	}
	defer st.h.batches.Put(o)
	for err == nil {
		var n int
		if n, err = st.drain(o); err == nil && n > 0 {
			if st.ws {
				err = st.w.ws(o)
			} else {
				err = st.w.sse(o.Buf, o)
			}
			if err == nil {
				st.written(o)
			}
		}
		if err == nil && o.Emptied && st.release() {
			return
		}
	}
	st.finish(err)
}

// drain takes a batch of frames (one cgo call, capped by BatchBytes);
// an error when the connection must end.
func (st *stream) drain(o *outBatch) (int, error) {
	if st.ending.Load() {
		return 0, errSubscriberClosed
	}
	n, err := st.c.drain(o.Batch, st.ws)
	if err != nil {
		if !errors.Is(err, errSubscriberClosed) {
			st.h.log.Error("drain failed", "err", err)
		}
		return 0, errSubscriberClosed
	}
	if n > 0 {
		st.h.read.Add(uint64(n))
		st.sent.Add(float64(n))
		st.h.metrics.batchBytes.Observe(float64(len(o.Buf)))
	}
	return n, nil
}

// written notes how long the frames just written took from Rails'
// `queued_at` (frames whose message had none are not counted). A clock
// behind the publisher's reads as no delay.
func (st *stream) written(o *outBatch) {
	now := time.Now()
	for i := range o.Len() {
		if t, ok := o.QueuedAt(i); ok {
			st.h.metrics.latency.Observe(max(now.Sub(t), 0).Seconds())
		}
	}
}

// end ends the stream (the connection was stopped): at once if it is
// idle, else at its owner's next drain.
func (st *stream) end() {
	st.ending.Store(true)
	if st.claim() {
		st.finish(errSubscriberClosed)
	}
}

// finish is the owner's: a write failed or the subscriber is closed. Once,
// on a goroutine of its own (a tick may be writing): ticks stop, the
// stream leaves its writer, done runs.
func (st *stream) finish(err error) {
	st.finishOnce.Do(func() {
		go func() {
			if !errors.Is(err, errSubscriberClosed) {
				st.c.stop(stopGone) // a write failed
			}
			st.tickMu.Lock()
			st.ticksOver = true
			st.timer.Stop()
			st.tickMu.Unlock()
			st.wr.mu.Lock()
			delete(st.wr.streams, st.token)
			st.wr.mu.Unlock()
			st.done()
		}()
	})
}
