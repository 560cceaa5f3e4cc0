package main

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/evroute/evroute/bindings/go/streaming"
)

// config is Mastodon's streaming environment (SERVER.md §1) plus EVROUTE_*.
type config struct {
	socket, bind   string
	port           int
	trustedProxies *streaming.TrustedProxies // TRUSTED_PROXY_IP

	databaseURL string // a pgx connection string
	dbPool      int

	redisURL       string
	redisNamespace string

	subscribeMode string
	queueCapacity int
	overflow      string
	historyEvents int // 0: no history, no event ids, no resume
	historyAge    int
	refresh       time.Duration
	batchBytes    int
	logLevel      string
	debugAddr     string // pprof's endpoints; "": none
}

// evrouteSettings are listed by --help.
var evrouteSettings = []struct{ name, def, help string }{
	{"EVROUTE_SUBSCRIBE_MODE", "channels", "channels (SUBSCRIBE what local clients listen to, as Mastodon) or pattern (PSUBSCRIBE timeline:*)"},
	{"EVROUTE_QUEUE_CAPACITY", "4096", "frames queued per connection before the overflow policy applies"},
	{"EVROUTE_OVERFLOW", "drop_oldest", "drop_oldest, drop_newest or disconnect (a slow client is closed)"},
	{"EVROUTE_HISTORY_EVENTS", "256", "events kept per channel for clients that resume (Last-Event-ID); 0 turns ids and resume off"},
	{"EVROUTE_HISTORY_AGE_S", "300", "the oldest event kept for resume, in seconds"},
	{"EVROUTE_FILTER_REFRESH_S", "60", "seconds between batched reloads of every connected account's viewer state"},
	{"EVROUTE_BATCH_BYTES", "65536", "bytes of frames drained and written per write (at least one frame)"},
	{"LOG_LEVEL", "info", "debug, info, warn or error (Mastodon's variable)"},
	{"EVROUTE_DEBUG_ADDR", "none", "host:port serving Go's profiles (/debug/pprof/: heap, goroutine, threadcreate...); keep it on loopback"},
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("Invalid %s environment variable: %s", name, v)
	}
	return n, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadConfig() (*config, error) {
	c := &config{socket: os.Getenv("SOCKET")}
	var err error
	ints := []struct {
		name string
		def  int
		dst  *int
	}{
		{"PORT", 4000, &c.port},
		{"DB_POOL", 10, &c.dbPool},
		{"EVROUTE_QUEUE_CAPACITY", 4096, &c.queueCapacity},
		{"EVROUTE_BATCH_BYTES", 65536, &c.batchBytes},
		{"EVROUTE_HISTORY_EVENTS", 256, &c.historyEvents},
		{"EVROUTE_HISTORY_AGE_S", 300, &c.historyAge},
	}
	for _, i := range ints {
		if *i.dst, err = envInt(i.name, i.def); err != nil {
			return nil, err
		}
	}
	refresh, err := envInt("EVROUTE_FILTER_REFRESH_S", 60)
	if err != nil {
		return nil, err
	}
	if refresh <= 0 || c.queueCapacity <= 0 || c.batchBytes <= 0 || c.dbPool <= 0 || c.historyAge <= 0 || c.historyEvents < 0 {
		return nil, fmt.Errorf("EVROUTE_FILTER_REFRESH_S, EVROUTE_QUEUE_CAPACITY, EVROUTE_BATCH_BYTES, EVROUTE_HISTORY_AGE_S and DB_POOL must be positive, EVROUTE_HISTORY_EVENTS at least 0")
	}
	c.refresh = time.Duration(refresh) * time.Second
	c.overflow = envOr("EVROUTE_OVERFLOW", "drop_oldest")
	switch c.overflow {
	case "drop_oldest", "drop_newest", "disconnect":
	default:
		return nil, fmt.Errorf("Invalid EVROUTE_OVERFLOW environment variable: %s (drop_oldest, drop_newest or disconnect)", c.overflow)
	}
	c.subscribeMode = envOr("EVROUTE_SUBSCRIBE_MODE", "channels")
	if c.subscribeMode != "channels" && c.subscribeMode != "pattern" {
		return nil, fmt.Errorf("Invalid EVROUTE_SUBSCRIBE_MODE environment variable: %s (channels or pattern)", c.subscribeMode)
	}
	c.logLevel = envOr("LOG_LEVEL", "info")
	c.debugAddr = os.Getenv("EVROUTE_DEBUG_ADDR")
	c.bind = strings.TrimSuffix(strings.TrimPrefix(envOr("BIND", "127.0.0.1"), "["), "]")
	if c.trustedProxies, err = streaming.ParseTrustedProxies(os.Getenv("TRUSTED_PROXY_IP")); err != nil {
		return nil, err
	}
	if c.databaseURL, err = databaseURL(); err != nil {
		return nil, err
	}
	if c.redisURL, err = redisURL(); err != nil {
		return nil, err
	}
	c.redisNamespace = os.Getenv("REDIS_NAMESPACE")
	return c, nil
}

// databaseURL follows Mastodon's pgConfigFromEnv (production defaults).
func databaseURL() (string, error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		if _, err := url.Parse(u); err != nil {
			return "", fmt.Errorf("Invalid DATABASE_URL environment variable: %v", err)
		}
		if pass := os.Getenv("DB_PASS"); pass != "" {
			pu, _ := url.Parse(u)
			if _, has := pu.User.Password(); !has && pu.User != nil {
				pu.User = url.UserPassword(pu.User.Username(), pass)
				u = pu.String()
			}
		}
		return u, nil
	}
	port, err := envInt("DB_PORT", 5432)
	if err != nil {
		return "", err
	}
	ssl := "disable"
	switch m := os.Getenv("DB_SSLMODE"); m {
	case "", "disable":
	case "no-verify":
		ssl = "require"
	case "allow", "prefer", "require", "verify-ca", "verify-full":
		ssl = m
	default:
		ssl = "verify-full"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(envOr("DB_USER", "mastodon"), os.Getenv("DB_PASS")),
		Host:     fmt.Sprintf("%s:%d", envOr("DB_HOST", "localhost"), port),
		Path:     "/" + envOr("DB_NAME", "mastodon_production"),
		RawQuery: "sslmode=" + ssl,
	}
	if strings.HasPrefix(envOr("DB_HOST", "localhost"), "/") { // a UNIX socket directory
		u.Host = ""
		u.RawQuery += "&host=" + url.QueryEscape(os.Getenv("DB_HOST")) + fmt.Sprintf("&port=%d", port)
	}
	return u.String(), nil
}

// redisURL follows Mastodon's redisConfigFromEnv.
func redisURL() (string, error) {
	for _, v := range []string{"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PORT"} {
		if os.Getenv(v) != "" {
			return "", fmt.Errorf("%s is set, but evroute-streaming cannot use Redis Sentinel: point REDIS_URL or REDIS_HOST at the current primary", v)
		}
	}
	if u := os.Getenv("REDIS_URL"); u != "" {
		if path, ok := strings.CutPrefix(u, "unix://"); ok {
			return "redis+unix://" + path, nil
		}
		return u, nil
	}
	port, err := envInt("REDIS_PORT", 6379)
	if err != nil {
		return "", err
	}
	db, err := envInt("REDIS_DB", 0)
	if err != nil {
		return "", err
	}
	u := url.URL{Scheme: "redis", Host: fmt.Sprintf("%s:%d", envOr("REDIS_HOST", "127.0.0.1"), port), Path: fmt.Sprintf("/%d", db)}
	if user, pass := os.Getenv("REDIS_USERNAME"), os.Getenv("REDIS_PASSWORD"); user != "" || pass != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String(), nil
}
