//go:build !linux

package proxy

import "syscall"

// peerClosed is only implemented on Linux; elsewhere a pooled connection
// the upstream closed is found out by net/http as before.
func peerClosed(syscall.RawConn) bool { return false }
