package fakeflow

import (
	"strconv"
	"strings"
)

// HeaderStamp asks a streamed prediction to stamp each token frame with the
// time fakeflow wrote it, for measuring the delay a proxy adds per frame:
//
//	X-Fakeflow-Stamp: 1
//
// A stamped token frame carries one extra field after data, the write time
// in Unix nanoseconds (the wall clock, so a reader on the same machine can
// subtract it from its own time.Now().UnixNano()):
//
//	message:\ndata:{"event":"token","data":"Hello","fakeflowStamp":1764092304123456789}\n\n
//
// Frames stay valid Flowise frames: Flowise clients read event and data and
// ignore other fields. Only token frames are stamped; without the header
// (or with "0" or "false") every frame is byte for byte Flowise's.
const HeaderStamp = "X-Fakeflow-Stamp"

// StampField is the JSON field name of the stamp in a token frame.
const StampField = "fakeflowStamp"

// stampParam reads HeaderStamp; msg is non-empty for a malformed value.
func stampParam(v []string) (on bool, msg string) {
	if len(v) == 0 {
		return false, ""
	}
	switch strings.ToLower(strings.TrimSpace(v[0])) {
	case "1", "true":
		return true, ""
	case "", "0", "false":
		return false, ""
	}
	return false, "fakeflow: bad " + HeaderStamp + " " + strconv.Quote(v[0]) + ": want 1 or 0"
}

// appendStampedTokenFrame appends token i's frame with the stamp ns.
func appendStampedTokenFrame(b []byte, i int, ns int64) []byte {
	b = append(b, framePrefix+`{"event":"token","data":"`...)
	b = append(b, tokenText(i)...)
	b = append(b, `","`+StampField+`":`...)
	b = strconv.AppendInt(b, ns, 10)
	return append(b, `}`+frameSuffix...)
}
