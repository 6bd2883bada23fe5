package sse

import "strings"

// refEvent is an event as the reference decoder gives it.
type refEvent struct {
	Type, Data, ID string
	Truncated      bool
}

// refResult is what the reference decoder makes of a whole stream.
type refResult struct {
	Events     []refEvent
	AtBoundary bool
	AfterCR    bool
}

// refParse is the reference the Parser is tested against: the spec's
// algorithm read literally, on the whole input at once, with nothing
// incremental and no care for speed. Values are kept whole and only cut
// when an event is dispatched, as Parser's bounds promise to behave:
// Data is cut at maxEvent (default 1 MiB when 0), Type and ID at
// min(maxEvent, 1 KiB).
func refParse(in []byte, maxEvent int) refResult {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEventBytes
	}
	maxName := min(maxEvent, maxNameBytes)

	s := strings.TrimPrefix(string(in), "\xEF\xBB\xBF")
	var lines []string
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			break
		}
		lines = append(lines, s[:i])
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
	partial := s

	var (
		r       refResult
		data    []string
		hasData bool
		typ, id string
		dirty   bool
	)
	for _, line := range lines {
		if line == "" {
			dirty = false
			if hasData {
				e := refEvent{Type: typ, Data: strings.Join(data, "\n"), ID: id}
				e.Data, e.Truncated = clip(e.Data, maxEvent, e.Truncated)
				e.Type, e.Truncated = clip(e.Type, maxName, e.Truncated)
				e.ID, e.Truncated = clip(e.ID, maxName, e.Truncated)
				if e.Type == "" {
					e.Type = "message"
				}
				r.Events = append(r.Events, e)
			}
			data, hasData, typ = nil, false, ""
			continue
		}
		if line[0] == ':' {
			continue
		}
		dirty = true
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			typ = value
		case "data":
			data = append(data, value)
			hasData = true
		case "id":
			if !strings.Contains(value, "\x00") {
				id = value
			}
		}
	}
	r.AtBoundary = partial == "" && !dirty
	r.AfterCR = strings.HasSuffix(string(in), "\r")
	return r
}

func clip(s string, n int, was bool) (string, bool) {
	if len(s) > n {
		return s[:n], true
	}
	return s, was
}
