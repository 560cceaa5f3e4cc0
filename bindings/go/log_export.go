package evroute

// #include "evroute.h"
import "C"

import (
	"context"
	"log/slog"
	"unsafe"
)

// evrGoLog is the evr_log_fn that SetLogger installs: it runs on whichever
// thread logged, often one of the library's own.
//
//export evrGoLog
func evrGoLog(_ unsafe.Pointer, level C.evr_log_level, target, message *C.char) {
	l := logTo.Load()
	if l == nil {
		l = slog.Default()
	}
	l.Log(context.Background(), slogLevel(level), C.GoString(message), slog.String("target", C.GoString(target)))
}
