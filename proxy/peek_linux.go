package proxy

import "syscall"

// peerIdle reports whether the connection is open with nothing to read:
// the only state in which a pooled connection may carry a new request. A
// close, a reset, or bytes nobody asked for all make it unusable. Nothing
// is consumed. Control, unlike RawConn.Read, takes no read lock.
func peerIdle(rc syscall.RawConn) bool {
	idle := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		idle = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	})
	return idle
}
