package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// registerHostMetrics exposes the metrics of Mastodon's streaming/metrics.js
// that the handler does not own: Redis ingest, the Postgres pool, and the
// process metrics of prom-client's defaults that Go's process collector lacks.
func registerHostMetrics(reg prometheus.Registerer, node *evroute.RedisNode, pool *pgPool) {
	nodeStat := func(pick func(evroute.RedisNodeStats) uint64) func() float64 {
		return func() float64 {
			st, err := node.Stats()
			if err != nil {
				return 0
			}
			return float64(pick(st))
		}
	}
	poolStat := func(pick func(*pgxpool.Stat) float64) func() float64 {
		return func() float64 { return pick(pool.Stat()) }
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		counter("redis_messages_received_total", "The total number of messages the streaming server has received from redis subscriptions",
			nodeStat(func(s evroute.RedisNodeStats) uint64 {
				return s.Received + s.Rejected + s.Ignored + s.SystemReceived + s.SystemDropped
			})),
		gauge("redis_subscriptions", "The number of Redis channels the streaming server is subscribed to",
			nodeStat(func(s evroute.RedisNodeStats) uint64 { return s.Subscriptions })),
		counter("evroute_redis_reconnects_total", "Redis connections re-established by the ingest node",
			nodeStat(func(s evroute.RedisNodeStats) uint64 { return s.Reconnects })),
		gauge("evroute_redis_presence_keys", "Presence keys (subscribed:<channel>) kept alive",
			nodeStat(func(s evroute.RedisNodeStats) uint64 { return s.PresenceKeys })),
		counter("evroute_redis_system_messages_dropped_total", "Messages of system channels (kill, filters_changed) dropped because the server did not drain them",
			nodeStat(func(s evroute.RedisNodeStats) uint64 { return s.SystemDropped })),
		gauge("pg_pool_total_connections", "The total number of clients existing within the pool",
			poolStat(func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) })),
		gauge("pg_pool_idle_connections", "The number of clients which are not checked out but are currently idle in the pool",
			poolStat(func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) })),
		gauge("pg_pool_waiting_queries", "The number of queued requests waiting on a client when all clients are checked out",
			func() float64 { return float64(pool.waiting.Load()) }),
		counter("pg_pool_empty_acquire_total", "Queries that waited for a connection because all were checked out",
			poolStat(func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) })),
		counter("process_cpu_user_seconds_total", "Total user CPU time spent in seconds.", func() float64 { return rusage(true) }),
		counter("process_cpu_system_seconds_total", "Total system CPU time spent in seconds.", func() float64 { return rusage(false) }),
		gauge("process_heap_bytes", "Process heap size in bytes.", processHeapBytes),
	)
}

// rusage is the process's user or system CPU time in seconds.
func rusage(user bool) float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := ru.Stime
	if user {
		tv = ru.Utime
	}
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// processHeapBytes is VmData of /proc/self/status, what prom-client reports
// as process_heap_bytes on Linux; 0 elsewhere.
func processHeapBytes() float64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmData:")); ok {
			f := bytes.Fields(rest) // "<n> kB"
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(string(f[0]), 64)
				return kb * 1024
			}
		}
	}
	return 0
}
