package streaming

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// The client address follows Express's trust proxy (proxy-addr): X-Forwarded-For
// is read right to left while the hop that reported it is trusted.
func TestClientAddr(t *testing.T) {
	cases := []struct {
		trust, peer, xff, want string
	}{
		// Mastodon's default: loopback and unique-local proxies.
		{"", "127.0.0.1:5000", "203.0.113.5", "203.0.113.5"},
		{"", "[::1]:5000", "203.0.113.5", "203.0.113.5"},
		{"", "10.1.2.3:5000", "203.0.113.5", "203.0.113.5"},
		{"", "192.168.1.1:5000", "198.51.100.1, 10.0.0.1", "198.51.100.1"},
		{"", "198.51.100.7:5000", "203.0.113.5", "198.51.100.7"}, // an untrusted peer cannot claim
		{"", "127.0.0.1:5000", "", "127.0.0.1"},
		{"", "127.0.0.1:5000", "203.0.113.9, 203.0.113.5", "203.0.113.5"}, // only the trusted hop's word
		{"", "[::ffff:127.0.0.1]:5000", "203.0.113.5", "203.0.113.5"},
		{"", "127.0.0.1:5000", "10.0.0.2, 10.0.0.1", "10.0.0.2"}, // all trusted: the leftmost
		{"", "127.0.0.1:5000", "garbage, 10.0.0.1", "garbage"},
		// TRUSTED_PROXY_IP replaces the default.
		{"127.0.0.1", "127.0.0.1:5000", "198.51.100.1, 10.0.0.1", "10.0.0.1"},
		{"198.51.100.0/24, 127.0.0.1", "198.51.100.7:5000", "203.0.113.5", "203.0.113.5"},
		{"198.51.100.0/24 127.0.0.1", "10.0.0.1:5000", "203.0.113.5", "10.0.0.1"},
		{"linklocal", "[fe80::1]:5000", "2001:db8::1", "2001:db8::1"},
		{"2001:db8::/32", "[2001:db8::7]:5000", "203.0.113.5", "203.0.113.5"},
		// A UNIX socket peer is the local proxy.
		{"", "@", "203.0.113.5", "203.0.113.5"},
	}
	for _, c := range cases {
		tp, err := ParseTrustedProxies(c.trust)
		if err != nil {
			t.Fatalf("%q: %v", c.trust, err)
		}
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := tp.ClientAddr(r); got != c.want {
			t.Errorf("trust %q peer %s XFF %q: %s, want %s", c.trust, c.peer, c.xff, got, c.want)
		}
	}
	for _, bad := range []string{"localhost", "10.0.0.0/33", "1.2.3"} {
		if _, err := ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "Invalid TRUSTED_PROXY_IP environment variable") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The request log names the client behind the trusted proxy, never the token.
func TestRequestLogClientAddress(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	f.h.log = slog.New(slog.NewTextHandler(&logs, nil))
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/streaming/nope?access_token=secret", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.5")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	line := logs.String()
	if !strings.Contains(line, "remote=203.0.113.5") || !strings.Contains(line, "path=/api/v1/streaming/nope") ||
		!strings.Contains(line, "request_id="+resp.Header.Get("X-Request-Id")) || strings.Contains(line, "secret") {
		t.Fatalf("log: %s", line)
	}
}
