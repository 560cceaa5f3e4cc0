package evroute

/*
#include "evroute.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Encoding selects which bytes of each frame Drain copies.
type Encoding int

const (
	// EncodingSSE is the Server-Sent Events text (Frame.SSE); frames are
	// self-delimiting, so Batch.Buf can go to the socket as it is.
	EncodingSSE Encoding = C.EVR_ENCODING_SSE
	// EncodingWS is the WebSocket message text (Frame.WS); send each
	// Batch.Frame(i) as its own message.
	EncodingWS Encoding = C.EVR_ENCODING_WS
)

// StatusBufferTooSmall: the oldest frame is longer than the whole buffer
// (Drain handles it by growing the buffer).
const StatusBufferTooSmall Status = C.EVR_BUFFER_TOO_SMALL

// DefaultBatchFrames is how many frames a Batch holds unless told otherwise.
const DefaultBatchFrames = 256

// Batch receives the bytes of the frames taken by one Drain, back to back.
// Reuse one Batch per connection: Drain allocates only when a frame is
// larger than the buffer's capacity.
type Batch struct {
	// Buf holds the frames' bytes, oldest first.
	Buf []byte
	// Ends[i] is where frame i ends in Buf (frame i starts at Ends[i-1], or 0).
	Ends []int
	// Emptied is set by Drain: true when the subscriber's queue was left
	// empty (no frame, or the last one taken), false when frames are left
	// (the batch filled up). A ReadySet host drains a token's subscriber
	// until it is true.
	Emptied bool
	lens    []C.size_t
	queued  []C.uint64_t // frame i's queued_at in ms (0: none)
}

// NewBatch makes a batch with room for maxBytes bytes and maxFrames frames
// per Drain (maxFrames <= 0: DefaultBatchFrames).
func NewBatch(maxBytes, maxFrames int) *Batch {
	if maxFrames <= 0 {
		maxFrames = DefaultBatchFrames
	}
	return &Batch{
		Buf:    make([]byte, 0, maxBytes),
		Ends:   make([]int, 0, maxFrames),
		lens:   make([]C.size_t, maxFrames),
		queued: make([]C.uint64_t, maxFrames),
	}
}

// Len is the number of frames in the batch.
func (b *Batch) Len() int { return len(b.Ends) }

// Frame is the bytes of frame i; valid until the next Drain into b.
func (b *Batch) Frame(i int) []byte {
	start := 0
	if i > 0 {
		start = b.Ends[i-1]
	}
	return b.Buf[start:b.Ends[i]]
}

// QueuedAt is when frame i's message was queued (its `queued_at`, which
// Rails sets on every message it publishes), for a delivery-latency
// measure taken once the bytes are written; false when it had none.
func (b *Batch) QueuedAt(i int) (time.Time, bool) {
	ms := b.queued[i]
	return time.UnixMilli(int64(ms)), ms != 0
}

// Drain takes the waiting frames, oldest first, and copies one encoding
// of each into b (replacing its contents) in a single cgo call: as many
// whole frames as fit in cap(b.Buf) bytes and b's frame count. It waits up
// to timeout for a first frame (<= 0: don't wait; the wait blocks an OS
// thread, so event loops wait with a Waiter instead). It returns the number
// of frames (0 when none arrived) or an error matching ErrClosed once the
// subscriber is closed (Message: "closed" or "slow consumer"). A frame
// larger than the whole buffer grows b.Buf to fit it, so a call that finds
// frames always takes at least one. It sets b.Emptied.
func (s *Subscriber) Drain(b *Batch, enc Encoding, timeout time.Duration) (int, error) {
	if len(b.lens) == 0 || len(b.queued) != len(b.lens) {
		*b = *NewBatch(cap(b.Buf), DefaultBatchFrames)
	}
	if cap(b.Buf) == 0 {
		b.Buf = make([]byte, 0, 64<<10)
	}
	b.Buf, b.Ends, b.Emptied = b.Buf[:0], b.Ends[:0], true
	ms := C.uint32_t(0)
	if timeout > 0 {
		ms = C.uint32_t(min((timeout+time.Millisecond-1)/time.Millisecond, maxWait/time.Millisecond))
	}
	for {
		frames, bytes, emptied, st, err := s.read(b, enc, ms)
		switch {
		case err != nil:
			return 0, err
		case st == StatusBufferTooSmall:
			b.Buf = make([]byte, 0, bytes)
			continue
		case st != StatusOK:
			return 0, nil
		}
		b.Buf, b.Emptied = b.Buf[:bytes], emptied
		end := 0
		for _, n := range b.lens[:frames] {
			end += int(n)
			b.Ends = append(b.Ends, end)
		}
		return frames, nil
	}
}

// read is one evr_subscriber_read call into b's memory (Go memory without
// Go pointers, so it may be passed to C).
func (s *Subscriber) read(b *Batch, enc Encoding, ms C.uint32_t) (frames, bytes int, emptied bool, st Status, err error) {
	ptr, err := s.use()
	if err != nil {
		return 0, 0, true, StatusClosed, err
	}
	defer s.mu.RUnlock()
	buf := b.Buf[:cap(b.Buf)]
	var nFrames, nBytes C.size_t
	var left C.int
	st, err = call(func() C.int {
		return C.int(C.evr_subscriber_read(ptr, ms, uint32(enc), (*C.uint8_t)(unsafe.Pointer(&buf[0])),
			C.size_t(len(buf)), &b.lens[0], &b.queued[0], C.size_t(len(b.lens)), &nFrames, &nBytes, &left))
	})
	runtime.KeepAlive(s)
	switch {
	case err != nil:
		return 0, 0, true, st, err
	case st == StatusClosed:
		return 0, 0, true, st, s.closedError(ptr)
	}
	return int(nFrames), int(nBytes), left != 0, st, nil
}

// closedError is ErrClosed with the reason the subscriber closed.
func (s *Subscriber) closedError(ptr *C.evr_subscriber) error {
	reason := "closed"
	if r := C.evr_subscriber_closed(ptr); r != nil {
		reason = C.GoString(r)
	}
	return &Error{StatusClosed, reason}
}

// Waiter parks goroutines (not OS threads) until frames wait for a
// subscriber, through Go's network poller on a duplicate of the
// subscriber's readiness fd. Use one per subscriber; Close it before the
// subscriber.
type Waiter struct {
	poller
}

// NewWaiter registers the subscriber's readiness fd with Go's poller.
func (s *Subscriber) NewWaiter() (*Waiter, error) {
	fd, err := s.Fd()
	if err != nil {
		return nil, err
	}
	w := &Waiter{}
	if err := w.poller.init(fd); err != nil {
		return nil, err
	}
	return w, nil
}

// poller waits for a level-triggered readiness fd (a subscriber's or a
// ready set's) in Go's poller, on a duplicate of it.
type poller struct {
	file *os.File
	raw  syscall.RawConn
	// deadline is the read deadline set last (UnixNano; 0: unknown), so
	// that a loop waiting again with the same deadline does not reset
	// Go's timer every time.
	deadline atomic.Int64
	// check is what Wait asks through raw.Read (made once: a closure per
	// Wait would be an allocation); asked is set by its first call in a
	// Wait.
	check func(fd uintptr) bool
	asked bool
}

func (p *poller) init(fd int) error {
	dup, err := syscall.Dup(fd)
	if err != nil {
		return fmt.Errorf("evroute: dup readiness fd: %w", err)
	}
	syscall.CloseOnExec(dup)
	// The fd is non-blocking, so os.NewFile puts it into the poller.
	file := os.NewFile(uintptr(dup), "evroute-ready")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return fmt.Errorf("evroute: readiness fd: %w", err)
	}
	p.file, p.raw = file, raw
	// Go's poller is edge-triggered; the fd is level-triggered. Asking the
	// fd itself before parking keeps frames left from an earlier, partial
	// drain from being missed. Once parked, a wakeup is a signal that came
	// after that question (raw.Read forgets older ones first), so it is
	// not asked again: a ppoll less per wakeup.
	p.check = func(fd uintptr) bool {
		if p.asked {
			return true
		}
		p.asked = true
		return readable(fd)
	}
	return nil
}

// ErrWaitTimeout is returned by Wait when the deadline passed first (or
// Wake was called).
var ErrWaitTimeout = errors.New("evroute: wait timed out")

// Wait returns nil as soon as the fd is readable (frames wait or the
// subscriber is closed; for a ReadySet, tokens are listed), at once if it
// already is, and ErrWaitTimeout when the deadline passes first (a zero
// deadline waits without limit) or Wake is called. One goroutine at a time
// may Wait (any may Wake); if another drains meanwhile, Wait may return
// nil with nothing left.
func (p *poller) Wait(deadline time.Time) error {
	// Noted before it is set and forgotten after Wake sets its own, so the
	// note never names a deadline other than the one in force.
	if d := deadline.UnixNano(); deadline.IsZero() || p.deadline.Load() != d {
		p.deadline.Store(d)
		if err := p.file.SetReadDeadline(deadline); err != nil {
			p.deadline.Store(0)
			return err
		}
	}
	p.asked = false
	err := p.raw.Read(p.check)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrWaitTimeout
	}
	return err
}

// Wake makes a Wait in progress return ErrWaitTimeout (a later Wait sets
// its own deadline, so keep a stop flag and check it after each Wait).
func (p *poller) Wake() error {
	err := p.file.SetReadDeadline(time.Unix(1, 0))
	p.deadline.Store(0)
	return err
}

// Control runs f with the duplicate fd that Wait polls, valid only while f
// runs (an error once closed): to watch it from another poller as well.
func (p *poller) Control(f func(fd uintptr)) error { return p.raw.Control(f) }

// Close takes the fd out of the poller and closes the duplicate.
func (p *poller) Close() error { return p.file.Close() }
