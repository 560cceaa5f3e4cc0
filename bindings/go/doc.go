// Package evroute is the Go binding of evroute, an embedded event-routing
// engine for Mastodon-style streaming servers (SPEC §10).
//
// It is a thin cgo layer over the C ABI (include/evroute.h) and links the
// static library, so build it first: `cargo build --release --lib` at the
// repository root.
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
// Errors are *Error values carrying the C status and the evr_last_error
// message; compare them with errors.Is against ErrInvalidJSON and the other
// sentinels.
package evroute
