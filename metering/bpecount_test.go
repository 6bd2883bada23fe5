package metering

import (
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// The reference: tiktoken-go itself, with the same offline ranks.
var (
	setRefLoader = sync.OnceFunc(func() { tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader()) })
	refO200k     = sync.OnceValue(func() *tiktoken.Tiktoken { return refEncoding("o200k_base") })
	refCl100k    = sync.OnceValue(func() *tiktoken.Tiktoken { return refEncoding("cl100k_base") })
)

func refEncoding(name string) *tiktoken.Tiktoken {
	setRefLoader()
	enc, err := tiktoken.GetEncoding(name)
	if err != nil {
		panic(err)
	}
	return enc
}

type encodingPair struct {
	name string
	ours *bpeEncoding
	ref  *tiktoken.Tiktoken
}

func testEncodings(tb testing.TB) []encodingPair {
	if o200k() == nil || cl100k() == nil {
		tb.Fatal("encodings not loaded")
	}
	return []encodingPair{{"o200k_base", o200k(), refO200k()}, {"cl100k_base", cl100k(), refCl100k()}}
}

// The patterns tiktoken-go v0.1.8 compiles with regexp2 (encoding.go).
var refPatterns = map[string]*regexp2.Regexp{
	"o200k_base": regexp2.MustCompile(strings.Join([]string{
		`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
		`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
		`\p{N}{1,3}`,
		` ?[^\s\p{L}\p{N}]+[\r\n/]*`,
		`\s*[\r\n]+`,
		`\s+(?!\S)`,
		`\s+`,
	}, "|"), regexp2.None),
	"cl100k_base": regexp2.MustCompile(`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, regexp2.None),
}

// refPieces are the ends of regexp2's matches, as byte offsets in s with
// invalid UTF-8 replaced (as tiktoken-go's []rune(text) does).
func refPieces(re *regexp2.Regexp, s string) []int {
	runes := []rune(s)
	var ends []int
	m, _ := re.FindRunesMatch(runes)
	for m != nil {
		ends = append(ends, len(string(runes[:m.Index+m.Length])))
		m, _ = re.FindNextMatch(m)
	}
	return ends
}

func ourPieces(e *bpeEncoding, s string) []int {
	text := []byte(s)
	if !utf8.Valid(text) {
		text = replaceInvalid(text)
	}
	var ends []int
	for i := 0; i < len(text); {
		i = e.piece(text, i)
		ends = append(ends, i)
	}
	return ends
}

// checkCount asserts that count gives tiktoken-go's count for s.
func checkCount(tb testing.TB, e encodingPair, s string) {
	tb.Helper()
	want := len(e.ref.EncodeOrdinary(s))
	if got := e.ours.count([]byte(s)); got != want {
		tb.Errorf("%s: count(%+q) = %d, tiktoken-go %d", e.name, s, got, want)
	}
	if got, want := ourPieces(e.ours, s), refPieces(refPatterns[e.name], s); !slices.Equal(got, want) {
		tb.Errorf("%s: pieces of %+q end at %v, regexp2's at %v", e.name, s, got, want)
	}
}

// handcrafted are the inputs where .NET and RE2 semantics, or the
// emulated look-ahead, could part.
var handcrafted = []string{
	"", "a", " ", "  ", "\t", "\n", "\r\n", "'", "''", "'s",
	"it's I'M we'Re they'VE he'Ll she'D don'T IT'S You'lL WE'rE 'S 'Ll 'll 'LL 'd 'D 'm",
	"caſe it'ſ it'ſſ 'ſ 'K 'k 'İ 'ı 'ﬅ it'\u017Ft",
	"HELLO's World'S CamelCase'll mIxEd'Ve ǅungla'd ʰello's",
	"a\rb\nc\r\nd\n\n\ne\r\r\nf \n g\t\n\th  \n\n  i",
	"trailing   ", "trailing\t\t", "trailing \n ", "\n\n\n", "   \n", " \n\n x",
	"tab\there\t\tand\t \tthere", "\v\f vertical\vform\ffeed",
	"nbsp\u00a0here\u00a0\u00a0x \u00a0y\u00a0 z", "em\u2003space\u2003\u2003x", "nel\u0085x\u0085\u0085 y",
	"ideo\u3000space\u3000\u3000日本", "line\u2028sep\u2029para", "ogham\u1680x \u202f\u205f",
	"x  !", "x  ?? y", "x   123", "x \t1", "a  ,b", "  -5", " \u00a0(x)", "\u3000\u3000。",
	"1234567890123", "12,345,678.90", "٣٤٥٦٧ १२३४ ²³ ⅫⅣ ½", "v1.2.3-rc4",
	"👨‍👩‍👧‍👦 family 👍🏽 ok 🏳️‍🌈", "e\u0301 cafe\u0301 n\u0303o \u0301x A\u0301B\u0301",
	"日本語のテキストです。中文文本，还有标点！한국어 텍스트",
	"مرحبا بالعالم، كيف حالك؟ ١٢٣", "Привет мир, ΕΛΛΗΝΙΚΑ ελληνικά's", "mixed日本English123עברית",
	"\xff", "a\xffb", "\xc3", "x\xc3\x28y", "\xed\xa0\x80 surrogate", "\xf4\x90\x80\x80 beyond", "\xe2\x82 cut",
	"path/to/file.go\n/usr/bin\r\n//comment//\n", "!!!\n\n", " ...\r\n\r\n", "{\"a\":[1,2,3]}\n",
	"https://example.com/a?b=c&d=e#f", "emails: a.b@c.de, x_y@z.io",
	"\u00adsoft\u200bzero\u200dwidth\ufeffbom", "\ufffd\ufffd replacement",
	strings.Repeat("x", 300), strings.Repeat(" ", 300) + "x", strings.Repeat("\n ", 200) + "y",
	strings.Repeat("ab ", 200), strings.Repeat("日本", 200),
}

// pieces the random generator draws from: one per class.
var randomPieces = [][]string{
	{"a", "z", "hello", "World", "THE", "x"},
	{"A", "Q", "ÉCOLE", "École", "ǅ", "ʰ"},
	{"'s", "'S", "'t", "'re", "'RE", "'Ve", "'m", "'ll", "'Ll", "'LL", "'d", "'D", "'", "'ſ", "'K", "'x"},
	{"0", "7", "123", "4567", "٣", "१", "²", "Ⅻ"},
	{" ", " ", "  ", "\t", "\v", "\f"},
	{"\n", "\r", "\r\n", "\n\n", "\u2028"},
	{"\u00a0", "\u2003", "\u0085", "\u3000", "\u1680", "\u202f"},
	{".", ",", "!", "?", "/", "-", "(", ")", "\"", "{", "}", "…", "—", "。", "，", "$", "€", "+", "="},
	{"\u0301", "\u0303", "\u0308", "\u200d", "\ufe0f", "\u200b", "\u00ad"},
	{"👍", "👨\u200d👩\u200d👧", "🏽", "🏳️\u200d🌈", "😀"},
	{"日本", "語", "中文", "한국어", "ひらがな", "カタカナ"},
	{"مرحبا", "ب", "עברית", "Привет", "ελληνικά", "ภาษาไทย", "हिन्दी"},
	{"ſ", "K", "İ", "ı", "ß", "ﬅ", "Ω"},
	{"\xff", "\xc3", "\xed\xa0\x80", "\xe2\x82", "\x80"},
}

func randomString(r *rand.Rand) string {
	var b strings.Builder
	for n := 1 + r.Intn(40); n > 0; n-- {
		class := randomPieces[r.Intn(len(randomPieces))]
		b.WriteString(class[r.Intn(len(class))])
	}
	return b.String()
}

// sampleTexts are ../shared/samples and testdata/samples (the gateway's
// recorded answers), whole and as the JSON strings they hold.
func sampleTexts(tb testing.TB) []string {
	files, _ := filepath.Glob("../../shared/samples/*")
	if len(files) == 0 {
		tb.Log("no samples in ../../shared/samples")
	}
	local, _ := filepath.Glob("testdata/samples/*")
	files = append(files, local...)
	str := regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	var texts []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		texts = append(texts, string(b))
		for _, m := range str.FindAllStringSubmatch(string(b), -1) {
			texts = append(texts, strings.NewReplacer(`\n`, "\n", `\"`, `"`, `\t`, "\t", `\\`, `\`).Replace(m[1]))
		}
	}
	return texts
}

// TestCountMatchesTiktoken: count is tiktoken-go's len(EncodeOrdinary) on
// the samples, the handcrafted strings, their concatenations and a few
// thousand random strings, for both encodings.
func TestCountMatchesTiktoken(t *testing.T) {
	random := 3000
	if testing.Short() {
		random = 300
	}
	r := rand.New(rand.NewSource(1))
	var texts []string
	texts = append(texts, sampleTexts(t)...)
	texts = append(texts, handcrafted...)
	texts = append(texts, strings.Join(handcrafted, ""), strings.Join(handcrafted, " "), strings.Join(handcrafted, "\n"))
	for range random {
		texts = append(texts, randomString(r))
	}
	for range random / 15 { // longer ones: ten strings run together
		var b strings.Builder
		for range 10 {
			b.WriteString(randomString(r))
		}
		texts = append(texts, b.String())
	}
	for _, e := range testEncodings(t) {
		for _, s := range texts {
			checkCount(t, e, s)
		}
	}
}

// nextTestRune steps through every rune of the BMP and the SMP, where all
// the white space, marks, case pairs and most letters are, and through
// every 97th rune above (CJK extensions, private use, unassigned), which
// keeps the race-detector run to seconds.
func nextTestRune(r rune) rune {
	if r < 0x20000 {
		return r + 1
	}
	return r + 97
}

// TestSpaceClass: our \s, \p{L}, \p{N} and o200k's letter classes are
// regexp2's, for every rune.
func TestSpaceClass(t *testing.T) {
	classes := []struct {
		pattern string
		ours    func(rune) bool
	}{
		{`\s`, isWhite},
		{`\p{L}`, isLetter},
		{`\p{N}`, isNumber},
		{`[^\s\p{L}\p{N}]`, isOther},
		{`[^\r\n\p{L}\p{N}]`, isPrefix},
		{`[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, isUpperish},
		{`[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, isLowerish},
	}
	for _, c := range classes {
		re := regexp2.MustCompile(`^`+c.pattern+`$`, regexp2.None)
		for r := rune(0); r <= unicode.MaxRune; r = nextTestRune(r) {
			if !utf8.ValidRune(r) {
				continue
			}
			want, _ := re.MatchString(string(r))
			if got := c.ours(r); got != want {
				t.Errorf("%s %U: ours %v, regexp2 %v", c.pattern, r, got, want)
			}
		}
	}
}

// TestContractionCase: contraction matches what regexp2's (?i:…) matches,
// for every rune (of nextTestRune's) in every letter position: ASCII case
// only, not ſ (U+017F) for s nor K (U+212A) for k as RE2's folding has it.
func TestContractionCase(t *testing.T) {
	theirs := regexp2.MustCompile(`^(?i:'s|'t|'re|'ve|'m|'ll|'d)`, regexp2.None)
	for r := rune(0); r <= unicode.MaxRune; r = nextTestRune(r) {
		if !utf8.ValidRune(r) {
			continue
		}
		c := string(r)
		for _, s := range []string{"'" + c, "'" + c + "e", "'r" + c, "'v" + c, "'l" + c, "'" + c + "l"} {
			m, _ := theirs.FindStringMatch(s)
			want := 0
			if m != nil {
				want = len(string([]rune(s)[:m.Length]))
			}
			if got := contraction([]byte(s), 0); got != want {
				t.Errorf("%+q: ours %d bytes, regexp2 %d", s, got, want)
			}
		}
	}
}

// FuzzTokenCount: count is tiktoken-go's len(EncodeOrdinary), for both
// encodings.
func FuzzTokenCount(f *testing.F) {
	for _, s := range handcrafted {
		f.Add(s)
	}
	r := rand.New(rand.NewSource(2))
	for range 50 {
		f.Add(randomString(r))
	}
	encs := testEncodings(f)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1024 { // tiktoken-go's merge is quadratic in a piece
			s = s[:1024]
		}
		for _, e := range encs {
			checkCount(t, e, s)
		}
	})
}

// Benchmark texts: a chatflow answer of about 1 KiB of English, and about
// 4 KiB of mixed scripts.
var (
	benchEnglish = strings.Repeat("The quick brown fox jumps over the lazy dog, and it's 42 times faster than you'd think! "+
		"Here's a short answer:\n\n1. First, install the package.\n2. Then run `go test ./...`.\n", 6)[:1024]
	benchMixed = strings.Repeat("Hello world, 日本語のテキストです。 Привет мир! مرحبا بالعالم 123 "+
		"👨\u200d👩\u200d👧 café naïve e\u0301 ΕΛΛΗΝΙΚΑ's\t\n  한국어 텍스트 (x+y)/2 = 3.14; ", 40)[:4096]
)

func BenchmarkTokenCount(b *testing.B) {
	for _, text := range []struct{ name, s string }{{"English1KiB", benchEnglish}, {"Mixed4KiB", benchMixed}} {
		for _, e := range testEncodings(b) {
			b.Run(text.name+"/"+e.name+"/tiktoken", func(b *testing.B) {
				b.SetBytes(int64(len(text.s)))
				b.ReportAllocs()
				for b.Loop() {
					_ = len(e.ref.EncodeOrdinary(text.s))
				}
			})
			b.Run(text.name+"/"+e.name+"/count", func(b *testing.B) {
				t := []byte(text.s)
				b.SetBytes(int64(len(t)))
				b.ReportAllocs()
				for b.Loop() {
					_ = e.ours.count(t)
				}
			})
		}
	}
}
