package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"
)

func TestPeerClosedSeesAHangUpWithoutConsuming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := c.(syscall.Conn).SyscallConn()
	srv := <-accepted
	if peerClosed(raw) {
		t.Fatal("open, idle connection reported closed")
	}
	srv.Write([]byte("x"))
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(time.Second))
	// Unread data: still open, and the peek must leave the byte in place.
	for range 100 {
		if peerClosed(raw) {
			t.Fatal("connection with unread data reported closed")
		}
	}
	if n, err := c.Read(buf); n != 1 || buf[0] != 'x' {
		t.Fatalf("peek consumed data: %d %v", n, err)
	}
	srv.Close()
	// The FIN crosses loopback asynchronously; peerClosed is what is tested.
	deadline := time.Now().Add(2 * time.Second)
	for !peerClosed(raw) {
		if time.Now().After(deadline) {
			t.Fatal("peer's close never seen")
		}
		time.Sleep(time.Millisecond)
	}
}
