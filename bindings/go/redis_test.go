package evroute

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func redisPing(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return line == "+PONG\r\n"
}

// startRedis runs a private redis-server on a free loopback port and
// returns its address.
func startRedis(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server)")
	}
	logFile := filepath.Join(t.TempDir(), "redis.log")
	for attempt := 0; attempt < 20; attempt++ { // retry on a port taken between probe and bind
		probe, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := probe.Addr().(*net.TCPAddr).Port
		probe.Close()
		addr := "127.0.0.1:" + strconv.Itoa(port)
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--logfile", logFile)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
	wait:
		for i := 0; i < 50 && !redisPing(addr); i++ {
			select {
			case <-exited:
				break wait
			case <-time.After(100 * time.Millisecond):
			}
		}
		if redisPing(addr) {
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			return addr
		}
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Fatal("could not start redis-server; see its log in the test's temp dir")
	return ""
}

func nextWithin(t *testing.T, s *Subscriber, d time.Duration) *Frame {
	t.Helper()
	f, err := s.Next(d)
	if err != nil || f == nil {
		t.Fatalf("no frame within %v: %v", d, err)
	}
	return f
}

func TestRedisPublishReachesSubscriber(t *testing.T) {
	url := "redis://" + startRedis(t) + "/"
	doc := corpus(t, mastodon(t, "14")) // a local public status tagged #test
	payload := payloadOf(t, doc)
	const statusID = "108914430312582020"
	deleteMsg := []byte(`{"event":"delete","payload":"` + statusID + `"}`)

	eng := newEngine(t, Config{RedisNamespace: "evrgo"})
	sub := newSub(t, eng, SubscriberOptions{}, Subscription{Stream: "public"})

	if _, err := eng.AttachRedis(url, RedisOptions{PresenceTTL: -time.Second}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("negative option: %v", err)
	}
	if _, err := NewRedisPublisher("redis://127.0.0.1:1/", ""); !errors.Is(err, ErrIO) {
		t.Fatalf("unreachable publisher: %v", err)
	}

	node, err := eng.AttachRedis(url, RedisOptions{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if ok, err := node.WaitSubscribed(5 * time.Second); !ok || err != nil {
		t.Fatalf("not subscribed: %v %v", ok, err)
	}
	pub, err := NewRedisPublisher(url, "evrgo")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	// public, public:local, hashtag:test, hashtag:test:local; one node listening.
	if got, err := pub.Publish(doc); err != nil || got != (RedisPublished{4, 4}) {
		t.Fatalf("Publish: %+v %v", got, err)
	}
	f := nextWithin(t, sub, 5*time.Second)
	if want := sseBytes("update", payload); !bytes.Equal(f.SSE, want) {
		t.Fatalf("SSE\n%q\nwant\n%q", f.SSE, want)
	}
	if want := wsBytes([]string{"public"}, "update", payload); !bytes.Equal(f.WS, want) {
		t.Fatalf("WS\n%q\nwant\n%q", f.WS, want)
	}

	if got, err := pub.PublishChannel("timeline:public", deleteMsg); err != nil || got != (RedisPublished{1, 1}) {
		t.Fatalf("PublishChannel: %+v %v", got, err)
	}
	f = nextWithin(t, sub, 5*time.Second)
	if want := sseBytes("delete", []byte(statusID)); !bytes.Equal(f.SSE, want) {
		t.Fatalf("SSE\n%q\nwant\n%q", f.SSE, want)
	}
	if want := wsBytes([]string{"public"}, "delete", []byte(statusID)); !bytes.Equal(f.WS, want) {
		t.Fatalf("WS\n%q\nwant\n%q", f.WS, want)
	}
	if f, err := sub.Next(200 * time.Millisecond); f != nil || err != nil {
		t.Fatalf("unexpected %v %v", f, err)
	}

	// Received is raised just after delivery, so it may lag the frame.
	var st RedisNodeStats
	for i := 0; i < 100; i++ {
		if st, err = node.Stats(); err != nil || st.Received >= 5 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || st.Received != 5 || st.Rejected != 0 {
		t.Fatalf("stats %+v %v", st, err)
	}

	// After Stop, waiting fails at once and nothing more is received.
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := node.WaitSubscribed(time.Minute); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitSubscribed after Stop: %v", err)
	}
	if _, err := pub.PublishChannel("timeline:public", deleteMsg); err != nil {
		t.Fatal(err)
	}
	if f, err := sub.Next(300 * time.Millisecond); f != nil || err != nil {
		t.Fatalf("delivered after Stop: %v %v", f, err)
	}
	node.Close()
	node.Close()
	if _, err := node.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats after Close: %v", err)
	}
	pub.Close()
	if _, err := pub.Publish(doc); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// The channels mode subscribes exactly the local subscribers' channels: a
// message on another channel does not reach this node at all.
func TestRedisChannelsMode(t *testing.T) {
	url := "redis://" + startRedis(t) + "/"
	eng := newEngine(t, Config{})
	sub := newSub(t, eng, SubscriberOptions{}, Subscription{Stream: "hashtag", Tag: "mine"})
	if _, err := eng.AttachRedis(url, RedisOptions{Subscribe: "everything"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad mode: %v", err)
	}
	node, err := eng.AttachRedis(url, RedisOptions{Subscribe: "channels", PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	pub, err := NewRedisPublisher(url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if ok, err := node.WaitSynced(5 * time.Second); !ok || err != nil {
		t.Fatalf("not synced: %v %v", ok, err)
	}
	if st, _ := node.Stats(); st.Subscriptions != 1 {
		t.Fatalf("stats %+v", st)
	}
	msg := []byte(`{"event":"delete","payload":"7"}`)
	if got, err := pub.PublishChannel("timeline:hashtag:other", msg); err != nil || got.Receivers != 0 {
		t.Fatalf("other channel: %+v %v", got, err)
	}
	if got, err := pub.PublishChannel("timeline:hashtag:mine", msg); err != nil || got.Receivers != 1 {
		t.Fatalf("own channel: %+v %v", got, err)
	}
	if f := nextWithin(t, sub, 5*time.Second); f.Payload != "7" {
		t.Fatalf("frame %+v", f)
	}
}

// System channels reach the host through NextSystem, not the engine's
// subscribers, and get no presence key.
func TestRedisSystemChannels(t *testing.T) {
	addr := startRedis(t)
	url := "redis://" + addr + "/"
	eng := newEngine(t, Config{RedisNamespace: "ns"})
	sub := newSub(t, eng, SubscriberOptions{Account: "7"}, Subscription{Stream: "user"})
	node, err := eng.AttachRedis(url, RedisOptions{Subscribe: "channels", PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := node.ListenSystem("timeline:public"); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("routed channel as a system channel: %v", err)
	}
	for _, ch := range []string{"timeline:access_token:70", "timeline:system:7"} {
		if err := node.ListenSystem(ch); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := node.WaitSynced(5 * time.Second); !ok || err != nil {
		t.Fatalf("not synced: %v %v", ok, err)
	}
	if m, err := node.NextSystem(10 * time.Millisecond); m != nil || err != nil {
		t.Fatalf("nothing published yet: %+v %v", m, err)
	}
	if n := redisPublish(t, addr, "ns:timeline:access_token:70", `{"event":"kill"}`); n != 1 {
		t.Fatalf("PUBLISH reached %d subscribers", n)
	}
	m, err := node.NextSystem(5 * time.Second)
	if err != nil || m == nil || m.Channel != "timeline:access_token:70" || string(m.Payload) != `{"event":"kill"}` {
		t.Fatalf("system message %+v %v", m, err)
	}
	if f, _ := sub.Next(0); f != nil {
		t.Fatalf("a system message reached a subscriber: %+v", f)
	}
	if st, _ := node.Stats(); st.SystemReceived != 1 || st.PresenceKeys != 2 {
		t.Fatalf("stats %+v (presence keys: the user stream's two channels only)", st)
	}
	if ok, err := node.UnlistenSystem("timeline:system:7"); !ok || err != nil {
		t.Fatalf("unlisten: %v %v", ok, err)
	}
	if ok, err := node.UnlistenSystem("timeline:system:7"); ok || err != nil {
		t.Fatalf("second unlisten: %v %v", ok, err)
	}
	done := make(chan error, 1)
	go func() { _, err := node.NextSystem(time.Minute); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("NextSystem after Stop: %v", err)
	}
}

// redisPublish sends PUBLISH over RESP and returns the number of receivers.
func redisPublish(t *testing.T, addr, channel, msg string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	cmd := "*3\r\n$7\r\nPUBLISH\r\n"
	for _, arg := range []string{channel, msg} {
		cmd += "$" + strconv.Itoa(len(arg)) + "\r\n" + arg + "\r\n"
	}
	if _, err := conn.Write([]byte(cmd)); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	n, err := strconv.Atoi(line[1 : len(line)-2])
	if err != nil || line[0] != ':' {
		t.Fatalf("PUBLISH reply %q", line)
	}
	return n
}
