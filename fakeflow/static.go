package fakeflow

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// etagOf computes Express's default (weak) ETag of a body:
// W/"<length in hex>-<first 27 chars of base64(sha1(body))>".
func etagOf(body []byte) string {
	sum := sha1.Sum(body)
	var b [64]byte
	e := append(b[:0], 'W', '/', '"')
	e = strconv.AppendInt(e, int64(len(body)), 16)
	e = append(e, '-')
	var h [28]byte
	base64.StdEncoding.Encode(h[:], sum[:])
	e = append(e, h[:27]...)
	e = append(e, '"')
	return string(e)
}

// asset is a static file standing in for Flowise's UI build.
type asset struct {
	name  string
	body  []byte
	ctype []string
	etag  []string
}

// assetModTime is the fixed Last-Modified of every asset.
var assetModTime = time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)

func newAsset(name, ctype string, body []byte) asset {
	// express.static's ETag: W/"<size hex>-<mtime ms hex>".
	etag := `W/"` + strconv.FormatInt(int64(len(body)), 16) + "-" + strconv.FormatInt(assetModTime.UnixMilli(), 16) + `"`
	return asset{name: name, body: body, ctype: []string{ctype}, etag: []string{etag}}
}

var hvPublicMaxAge0 = []string{"public, max-age=0"}

// serveAsset serves a like express.static does, with conditional and range
// requests.
func serveAsset(w http.ResponseWriter, r *http.Request, a *asset) {
	h := w.Header()
	nodeKeepAlive(h)
	h["Content-Type"] = a.ctype
	h["Etag"] = a.etag
	h["Cache-Control"] = hvPublicMaxAge0
	http.ServeContent(w, r, a.name, assetModTime, bytes.NewReader(a.body))
}

const indexHTML = `<!doctype html>
<html lang="en">
    <head>
        <meta charset="utf-8" />
        <link rel="icon" href="/favicon.ico" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="theme-color" content="#000000" />
        <title>Flowise - Build AI Agents, Visually</title>
        <script type="module" crossorigin src="/assets/index-abc123.js"></script>
        <link rel="stylesheet" href="/assets/index-abc123.css" />
    </head>
    <body>
        <noscript>You need to enable JavaScript to run this app.</noscript>
        <div id="root"></div>
    </body>
</html>
`

const indexCSS = `:root{color-scheme:light dark;font-family:Inter,Roboto,Helvetica,Arial,sans-serif}
body{margin:0;min-height:100vh}#root{display:flex;flex-direction:column;min-height:100vh}
.fakeflow-card{border:1px solid #e0e0e0;border-radius:12px;padding:16px;margin:16px}
`

// buildJS returns a deterministic JavaScript bundle of roughly 6 KiB: enough
// text for compression tests, valid enough to run in a browser.
func buildJS() []byte {
	var b strings.Builder
	b.WriteString("/* fakeflow: stand-in for Flowise's UI bundle */\n")
	b.WriteString("const FAKEFLOW_VERSION = '3.1.2';\n")
	b.WriteString("const answers = [\n")
	for i := 0; i < 48; i++ {
		b.WriteString("    { id: ")
		b.WriteString(strconv.Itoa(i))
		b.WriteString(", text: 'Hello from the fake OpenAI server.', tokens: ['Hello', ' from', ' the', ' fake', ' OpenAI', ' server.'] },\n")
	}
	b.WriteString("];\n")
	b.WriteString(`function render(root) {
    const card = document.createElement('div');
    card.className = 'fakeflow-card';
    card.textContent = 'Flowise ' + FAKEFLOW_VERSION + ' (fakeflow): ' + answers.length + ' canned answers';
    root.appendChild(card);
}
async function ping() {
    const res = await fetch('/api/v1/ping');
    return res.ok && (await res.text()) === 'pong';
}
document.addEventListener('DOMContentLoaded', () => {
    const root = document.getElementById('root');
    if (root) render(root);
    ping().then((ok) => console.log('fakeflow ping', ok));
});
`)
	return []byte(b.String())
}

var (
	indexAsset = newAsset("index.html", "text/html; charset=UTF-8", []byte(indexHTML))
	jsAsset    = newAsset("index-abc123.js", "application/javascript; charset=UTF-8", buildJS())
	cssAsset   = newAsset("index-abc123.css", "text/css; charset=UTF-8", []byte(indexCSS))
)
