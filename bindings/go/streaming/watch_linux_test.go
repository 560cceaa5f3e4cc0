package streaming

import (
	"net"
	"testing"
	"time"
)

// tcpPair is a connected loopback pair: the server's end and the client's.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); c.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

func TestCloseWatch(t *testing.T) {
	watch := func(t *testing.T, s net.Conn) (chan struct{}, func()) {
		t.Helper()
		gone := make(chan struct{}, 2)
		unwatch := watchClose(s, func() { gone <- struct{}{} })
		if unwatch == nil {
			t.Fatal("a TCP connection is not watched")
		}
		return gone, unwatch
	}
	fired := func(gone chan struct{}, within time.Duration) bool {
		select {
		case <-gone:
			return true
		case <-time.After(within):
			return false
		}
	}
	t.Run("the client closes", func(t *testing.T) {
		s, c := tcpPair(t)
		gone, unwatch := watch(t, s)
		defer unwatch()
		c.Close()
		if !fired(gone, 2*time.Second) {
			t.Fatal("a closed client was not noticed")
		}
		if fired(gone, 100*time.Millisecond) {
			t.Fatal("gone called twice")
		}
	})
	t.Run("the client resets", func(t *testing.T) {
		s, c := tcpPair(t)
		gone, unwatch := watch(t, s)
		defer unwatch()
		_ = c.SetLinger(0)
		c.Close()
		if !fired(gone, 2*time.Second) {
			t.Fatal("a reset was not noticed")
		}
	})
	t.Run("data from the client is not a close", func(t *testing.T) {
		s, c := tcpPair(t)
		gone, unwatch := watch(t, s)
		defer unwatch()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if fired(gone, 200*time.Millisecond) {
			t.Fatal("client data taken for a close")
		}
		c.Close()
		if !fired(gone, 2*time.Second) {
			t.Fatal("a close after data was not noticed")
		}
	})
	t.Run("unwatched", func(t *testing.T) {
		s, c := tcpPair(t)
		gone, unwatch := watch(t, s)
		unwatch()
		unwatch() // a second call is harmless
		c.Close()
		if fired(gone, 200*time.Millisecond) {
			t.Fatal("gone called after unwatch")
		}
	})
	t.Run("many at once", func(t *testing.T) {
		const n = 300 // more than one wait's worth of events
		gone := make(chan struct{}, n)
		var clients []*net.TCPConn
		for i := 0; i < n; i++ {
			s, c := tcpPair(t)
			if unwatch := watchClose(s, func() { gone <- struct{}{} }); unwatch == nil {
				t.Fatal("not watched")
			} else {
				defer unwatch()
			}
			clients = append(clients, c)
		}
		for _, c := range clients {
			c.Close()
		}
		for i := 0; i < n; i++ {
			if !fired(gone, 2*time.Second) {
				t.Fatalf("%d of %d closes noticed", i, n)
			}
		}
	})
}
