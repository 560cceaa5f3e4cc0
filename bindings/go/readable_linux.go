package evroute

import (
	"syscall"
	"unsafe"
)

// readable reports whether fd polls readable now: ppoll with a zero
// timeout, a raw system call (it never blocks), not a cgo call.
func readable(fd uintptr) bool {
	p := struct {
		fd      int32
		events  int16
		revents int16
	}{fd: int32(fd), events: 0x1} // POLLIN
	var zero syscall.Timespec
	n, _, errno := syscall.RawSyscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	return errno == 0 && n == 1
}
