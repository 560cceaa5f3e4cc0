//go:build !linux

package main

import (
	"context"
	"runtime"
	"time"
)

// readStreams reads each client's stream in a goroutine of its own (Go's
// poller); without Linux's receive timestamps, arrival is the time of the
// read.
func (g *loadgen) readStreams(ctx context.Context, conns []*streamConn) error {
	for _, c := range conns {
		g.clientWG.Add(1)
		go func() {
			defer g.clientWG.Done()
			defer c.conn.Close()
			context.AfterFunc(ctx, func() { c.conn.Close() })
			rec := &recorder{g: g}
			defer g.keep(&rec.l)
			if ws, ok := c.p.(*wsParser); ok {
				ws.reply = func(b []byte) error { _, err := c.conn.Write(b); return err }
			}
			if c.p.feed(c.pending, rec) != nil {
				return
			}
			buf := make([]byte, 64<<10)
			for {
				n, err := c.conn.Read(buf)
				rec.read = time.Now().UnixNano()
				rec.arrived = rec.read
				g.unstamped.Add(1)
				if n > 0 && c.p.feed(buf[:n], rec) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	return nil
}

// pacingThread: the paced publisher keeps its goroutine on one thread.
func pacingThread() { runtime.LockOSThread() }

// sleepUntil sleeps until t.
func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}
