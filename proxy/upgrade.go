package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
)

// upgrade carries a 101 answer (WebSocket) through: the client's connection
// is taken over, the 101 written to it, and bytes are copied both ways
// until either side ends. onResponse already set the attempt's timer to
// idle between bytes in either direction.
func (g *Gateway) upgrade(st *reqState, res *http.Response) {
	reqType := upgradeType(st.outHdr)
	resType := upgradeType(res.Header)
	if !printable(resType) {
		res.Body.Close()
		g.attemptFailed(st, errUpgrade("upstream switched to an invalid protocol %q", resType))
		return
	}
	if !strings.EqualFold(reqType, resType) {
		res.Body.Close()
		g.attemptFailed(st, errUpgrade("upstream switched to %q when %q was asked", resType, reqType))
		return
	}
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		g.attemptFailed(st, errUpgrade("upstream's 101 answer has no connection to upgrade"))
		return
	}
	conn, brw, err := st.rw.Hijack()
	if errors.Is(err, http.ErrNotSupported) {
		back.Close()
		g.attemptFailed(st, errUpgrade("the client's connection cannot be taken over"))
		return
	}
	// The attempt's end (timeout, client gone) closes the upstream side.
	stop := context.AfterFunc(st.attemptCtx, func() { back.Close() })
	defer func() {
		stop()
		back.Close()
	}()
	if err != nil {
		g.attemptFailed(st, err)
		return
	}
	defer conn.Close()

	mergeHeader(st.rw.Header(), res.Header)
	res.Header = st.rw.Header()
	res.Body = nil // res.Write writes the head only
	if err := res.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	errc := make(chan error, 1)
	go splice(conn, back, errc)
	go splice(back, conn, errc)
	// Both directions done, or one failed.
	if err := <-errc; err == nil {
		<-errc
	}
}

var errSpliceDone = errors.New("upgraded connection: copy done")

// splice copies src to dst until src ends, then half-closes dst so the
// other side sees the end too.
func splice(dst io.Writer, src io.Reader, errc chan<- error) {
	if _, err := io.Copy(dst, src); err != nil {
		errc <- err
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		errc <- cw.CloseWrite()
		return
	}
	errc <- errSpliceDone
}
