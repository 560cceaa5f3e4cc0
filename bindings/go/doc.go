// Package evroute is the Go binding of evroute, an embedded event-routing
// engine for Mastodon-style streaming servers. Import it as
// github.com/evroute/evroute/bindings/go; docs/protocol.md in the repository
// describes streams, subscription keys, filters, frames and errors.
//
// It is a thin cgo layer over the C ABI (include/evroute.h). By default it
// links the installed library through pkg-config (`pkg-config --cflags --libs
// evroute`): install it once with scripts/install.sh (README, "Installing"),
// or set PKG_CONFIG_PATH to the directory of evroute.pc. Inside the
// repository, `-tags evroute_inrepo` links target/release/libevroute.a
// instead (build it with `cargo build --release --lib`).
//
//	eng, _ := evroute.NewEngine(evroute.Config{QueueCapacity: 1024})
//	sub, _ := eng.NewSubscriber(evroute.SubscriberOptions{Account: "42"})
//	_ = sub.Subscribe(evroute.Subscription{Stream: "hashtag", Tag: "rust"})
//	stats, _ := eng.Publish(eventJSON)
//	frame, _ := sub.Next(500 * time.Millisecond) // nil on timeout; frame.SSE, frame.WS
//
// Every handle has Close(), which may be called more than once and from any
// goroutine; a finalizer closes handles that were not closed. Closing a
// Subscriber wakes a goroutine blocked in Next, which then returns an error
// matching ErrClosed. Engines and subscribers are safe for concurrent use.
//
// The library's log records (Redis outages, skipped messages) go to log/slog:
// slog.Default() at slog.LevelInfo unless SetLogger says otherwise.
//
// Errors are *Error values carrying the C status and the evr_last_error
// message; compare them with errors.Is against ErrInvalidJSON and the other
// sentinels.
package evroute
