//go:build !linux

package proxy

import "syscall"

// peerIdle is only implemented on Linux; elsewhere a pooled connection is
// trusted until a request on it fails.
func peerIdle(syscall.RawConn) bool { return true }
