package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// A body held in chunks reads back whole, finds a key wherever it falls
// (across a seam too), and joins into one piece only on demand.
func TestChunkedBodyInMemory(t *testing.T) {
	l := &bodyLimits{max: 1 << 20, inMem: 1 << 20, budget: &bodyBudget{limit: 1 << 20}, disk: &bodyBudget{limit: 1 << 20}}
	for _, at := range []int{0, chunkSize - 5, chunkSize - 1, chunkSize, 2*chunkSize - 3} {
		src := bytes.Repeat([]byte{'x'}, 3*chunkSize)
		copy(src[at:], `"streaming"`)
		var b requestBody
		b.budget, b.class = l.budget, -1
		if err := b.readKnown(bytes.NewReader(src), int64(len(src)), l); err != nil {
			t.Fatal(err)
		}
		if b.chunks == nil || b.file != nil {
			t.Fatalf("at %d: not held in chunks", at)
		}
		if !b.mentions(streamingKey) {
			t.Errorf("key at %d not found", at)
		}
		got, _ := io.ReadAll(b.reader())
		if !bytes.Equal(got, src) {
			t.Fatalf("at %d: read back %d bytes, differ", at, len(got))
		}
		if whole := b.inMemory(); !bytes.Equal(whole, src) || b.chunks != nil {
			t.Fatalf("at %d: join failed", at)
		}
		b.release()
		if u := l.budget.used.Load(); u != 0 {
			t.Fatalf("at %d: %d bytes of budget still held after release", at, u)
		}
	}
	var b requestBody
	b.budget, b.class = l.budget, -1
	src := []byte(strings.Repeat("y", 3*chunkSize))
	if err := b.readKnown(bytes.NewReader(src), int64(len(src)), l); err != nil || b.mentions(streamingKey) {
		t.Fatalf("found a key that is not there (%v)", err)
	}
	b.release()
}
