package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"
)

func TestPeerIdleSeesHangUpsAndUnaskedBytesWithoutConsuming(t *testing.T) {
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
	if !peerIdle(raw) {
		t.Fatal("open, idle connection reported unusable")
	}
	srv.Write([]byte("x"))
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(time.Second))
	// Bytes nobody asked for: unusable (they would be read as the next
	// answer), and the peek must leave them in place.
	deadline := time.Now().Add(2 * time.Second)
	for peerIdle(raw) {
		if time.Now().After(deadline) {
			t.Fatal("unasked byte never seen")
		}
		time.Sleep(time.Millisecond)
	}
	if n, err := c.Read(buf); n != 1 || buf[0] != 'x' {
		t.Fatalf("peek consumed data: %d %v", n, err)
	}
	if !peerIdle(raw) {
		t.Fatal("idle again once the byte was read, but reported unusable")
	}
	srv.Close()
	// The FIN crosses loopback asynchronously; peerClosed is what is tested.
	deadline = time.Now().Add(2 * time.Second)
	for peerIdle(raw) {
		if time.Now().After(deadline) {
			t.Fatal("peer's close never seen")
		}
		time.Sleep(time.Millisecond)
	}
}
