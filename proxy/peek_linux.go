package proxy

import "syscall"

// peerClosed reports whether the peer has closed or reset the connection,
// without consuming anything. Control, unlike RawConn.Read, does not take
// the read lock that net/http's read loop holds while it waits.
func peerClosed(rc syscall.RawConn) bool {
	closed := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (n == 0 && err == nil) || err == syscall.ECONNRESET
	})
	return closed
}
