package streaming

import (
	"sync/atomic"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are Mastodon's streaming metrics plus evroute's own.
type metrics struct {
	clients       *prometheus.GaugeVec   // connected_clients{type}
	channels      *prometheus.GaugeVec   // connected_channels{type,channel}
	sent          *prometheus.CounterVec // messages_sent_total{type}
	dropped       *prometheus.CounterVec // evroute_frames_dropped_total{reason}
	disconnects   *prometheus.CounterVec // evroute_disconnects_total{reason}
	reloads       *prometheus.CounterVec // evroute_viewer_state_reloads_total{result}
	resumes       *prometheus.CounterVec // evroute_resumes_total{result}
	reloadSeconds prometheus.Histogram
	batchBytes    prometheus.Histogram
	latency       prometheus.Histogram // evroute_delivery_latency_seconds
}

var streamLabels = []string{
	"system", "user", "user:notification", "list", "direct", "public", "public:media",
	"public:local", "public:local:media", "public:remote", "public:remote:media", "hashtag", "hashtag:local",
}

func newMetrics(reg prometheus.Registerer, eng *evroute.Engine, read *atomic.Uint64) *metrics {
	m := &metrics{
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connected_clients", Help: "The number of clients connected to the streaming server",
		}, []string{"type"}),
		channels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connected_channels", Help: "The number of channels the streaming server is streaming to",
		}, []string{"type", "channel"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_sent_total", Help: "The total number of messages the streaming server sent to clients per connection type",
		}, []string{"type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evroute_frames_dropped_total", Help: "Frames not delivered because a client's queue was full, by reason",
		}, []string{"reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evroute_disconnects_total", Help: "Connections ended by the server, by reason",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evroute_viewer_state_reloads_total", Help: "Accounts whose viewer state was loaded from the database",
		}, []string{"result"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evroute_resumes_total", Help: "Reconnecting clients that asked to resume, by result (complete, or gap: told to refetch)",
		}, []string{"result"}),
		reloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "evroute_viewer_state_load_seconds", Help: "Time of one viewer state query (one account or one batch)",
		}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "evroute_write_batch_bytes", Help: "Bytes written to a client in one write",
			Buckets: prometheus.ExponentialBuckets(64, 4, 8),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "evroute_delivery_latency_seconds",
			Help: "From a message's queued_at (set by Rails when it publishes) to the write of its frame to a client",
			// 1 ms to about 4 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
		}),
	}
	m.dropped.WithLabelValues("overflow")
	m.disconnects.WithLabelValues("slow_consumer")
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	m.resumes.WithLabelValues("complete")
	m.resumes.WithLabelValues("gap")
	for _, t := range []string{"eventsource", "websocket"} {
		m.clients.WithLabelValues(t)
		m.sent.WithLabelValues(t)
		for _, ch := range streamLabels {
			m.channels.WithLabelValues(t, ch)
		}
	}
	stat := func(name, help string, pick func(evroute.EngineStats) uint64, counter bool) prometheus.Collector {
		f := func() float64 {
			st, err := eng.Stats()
			if err != nil {
				return 0
			}
			return float64(pick(st))
		}
		if counter {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.clients, m.channels, m.sent, m.dropped, m.disconnects, m.reloads, m.resumes, m.reloadSeconds, m.batchBytes, m.latency,
		stat("evroute_events_published_total", "Events routed by the engine", func(s evroute.EngineStats) uint64 { return s.Published }, true),
		stat("evroute_events_rejected_total", "Malformed events refused by the engine", func(s evroute.EngineStats) uint64 { return s.Rejected }, true),
		stat("evroute_frames_delivered_total", "Frames enqueued for clients", func(s evroute.EngineStats) uint64 { return s.Delivered }, true),
		stat("evroute_engine_frames_dropped_total", "Frames dropped by queue overflow (engine total)", func(s evroute.EngineStats) uint64 { return s.Dropped }, true),
		stat("evroute_subscriptions", "Subscriptions in the engine", func(s evroute.EngineStats) uint64 { return s.Subscriptions }, false),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evroute_queue_depth", Help: "Frames waiting in all client queues",
		}, func() float64 {
			// Per subscriber matched == read + depth + dropped, and the engine's
			// counters sum its subscribers'.
			st, err := eng.Stats()
			if err != nil {
				return 0
			}
			return float64(st.Matched) - float64(st.Dropped) - float64(read.Load())
		}),
	)
	return m
}
