package cache

import (
	"strings"
	"testing"

	"github.com/flowgate/flowgate/flow"
)

// The typical request of a cache hit.
const benchBody = `{"question":"What is the capital of France?","overrideConfig":{"temperature":0.2}}`

func BenchmarkDerive(b *testing.B) {
	for _, bb := range []struct{ name, body string }{
		{"typical", benchBody},
		{"streaming", `{"question":"What is the capital of France?","streaming":true,"overrideConfig":{"temperature":0.2,"vars":{"user":"x","tier":3}}}`},
		{"unsorted", `{"overrideConfig":{"vars":{"z":1,"y":2,"x":3},"temperature":0.2,"maxTokens":512},"question":"What is the capital of France?"}`},
		{"history-20", historyBody(20)},
		{"upload-256KiB", `{"question":"What is in this picture?","uploads":[{"data":"data:image/png;base64,` + strings.Repeat("iVBORw0KGgo+/AAA", 16<<10) + `","type":"file","name":"a.png","mime":"image/png"}]}`},
	} {
		b.Run(bb.name, func(b *testing.B) {
			r := &Request{
				Info:        flow.Identify("/api/v1/prediction/3f1c2a9e-1111-4222-8333-444455556666"),
				Body:        []byte(bb.body),
				ContentType: "application/json",
				Vary:        []string{"Bearer sk-0123456789abcdef", ""},
			}
			b.SetBytes(int64(len(r.Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, bypass := Derive(r); bypass != "" {
					b.Fatal(bypass)
				}
			}
		})
	}
}

func historyBody(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"question":"And what about Germany?","history":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"type":"userMessage","message":"What is the capital of France? Tell me about its history."},{"type":"apiMessage","message":"Paris is the capital of France. It has been the capital since the tenth century."}`)
	}
	sb.WriteString(`],"overrideConfig":{"temperature":0.2}}`)
	return sb.String()
}

func BenchmarkAppendBody(b *testing.B) {
	for name, e := range sampleEntries(b) {
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 8<<10)
			b.SetBytes(int64(e.outLen))
			b.ReportAllocs()
			for b.Loop() {
				dst = e.AppendBody(dst[:0])
			}
		})
	}
}

func BenchmarkNewEntry(b *testing.B) {
	json := readSample(b, sampleChatJSON)
	events := parseStream(b, readSample(b, sampleAgentStream))
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewJSON(200, flowiseJSONType, json, testCreated)
		}
	})
	b.Run("agentflow-stream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewStream(200, events, testCreated)
		}
	})
}

func BenchmarkEntryBinary(b *testing.B) {
	e := sampleEntries(b)[sampleChatJSON]
	enc, _ := e.MarshalBinary()
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.MarshalBinary()
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d Entry
			d.UnmarshalBinary(enc)
		}
	})
}
