//go:build !linux

package evroute

/*
#include <poll.h>
*/
import "C"

// readable reports whether fd polls readable now (poll, zero timeout).
func readable(fd uintptr) bool {
	p := C.struct_pollfd{fd: C.int(fd), events: C.POLLIN}
	return C.poll(&p, 1, 0) == 1
}
