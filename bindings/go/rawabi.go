package evroute

// #include "evroute.h"
import "C"

// rawSubscribeNull calls evr_subscribe with a NULL subscriber, which the
// typed API never does; the tests use it to check the ErrNull mapping.
func rawSubscribeNull() error {
	_, err := call(func() C.int { return C.int(C.evr_subscribe(nil, nil, 0)) })
	return err
}
