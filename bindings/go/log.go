package evroute

/*
#include "evroute.h"

// Exported by log_export.go (cgo's prototype: no const).
void evrGoLog(void *user_data, evr_log_level level, char *target, char *message);

static enum evr_status evr_go_set_log(int level) {
	return evr_set_log_callback(level, level == EVR_LOG_OFF ? NULL : (evr_log_fn)evrGoLog, NULL);
}
*/
import "C"

import (
	"log/slog"
	"sync/atomic"
)

// The *slog.Logger that receives evroute's records; nil means slog.Default()
// at the time of each record.
var logTo atomic.Pointer[slog.Logger]

func init() {
	// The library itself never writes to stderr: its records (Redis outages,
	// skipped messages) go to slog from the start.
	if err := SetLogger(nil, slog.LevelInfo); err != nil {
		panic("evroute: " + err.Error())
	}
}

// SetLogger sends the records the evroute library logs at level and above
// to l, with the Rust module as the attribute "target"; nil means
// slog.Default() (looked up for each record, so slog.SetDefault applies).
// By default records at slog.LevelInfo and above go to slog.Default(). A
// level above slog.LevelError turns logging off. Records come from the
// library's own threads (the Redis node), so l must be safe for concurrent
// use, as slog loggers are.
func SetLogger(l *slog.Logger, level slog.Level) error {
	logTo.Store(l)
	var c C.int
	switch {
	case level > slog.LevelError:
		c = C.EVR_LOG_OFF
	case level > slog.LevelWarn:
		c = C.EVR_LOG_ERROR
	case level > slog.LevelInfo:
		c = C.EVR_LOG_WARN
	case level > slog.LevelDebug:
		c = C.EVR_LOG_INFO
	case level > slog.LevelDebug-4:
		c = C.EVR_LOG_DEBUG
	default:
		c = C.EVR_LOG_TRACE
	}
	_, err := call(func() C.int { return C.int(C.evr_go_set_log(c)) })
	return err
}

// slogLevel maps an evr_log_level to slog's levels (TRACE is Debug-4).
func slogLevel(level C.evr_log_level) slog.Level {
	switch level {
	case C.EVR_LOG_ERROR:
		return slog.LevelError
	case C.EVR_LOG_WARN:
		return slog.LevelWarn
	case C.EVR_LOG_INFO:
		return slog.LevelInfo
	case C.EVR_LOG_DEBUG:
		return slog.LevelDebug
	default:
		return slog.LevelDebug - 4
	}
}
