package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Masker computes the transformers' outputs under one secret. It is safe
// for concurrent use.
type Masker struct {
	key []byte
}

// NewMasker returns a Masker keyed with secret, which must not be empty.
func NewMasker(secret []byte) (*Masker, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("mask: the salt secret is empty")
	}
	return &Masker{key: append([]byte(nil), secret...)}, nil
}

// Value returns the masked form of v under transformer t. NULL (ok false)
// stays NULL and the empty string stays empty: neither says anything about
// anyone. Value handles only the transformers that map each value on its
// own (fake_*, hash, redact); null, shuffle and keep work on whole columns.
func (m *Masker) Value(t Transform, v string) string {
	if v == "" {
		return ""
	}
	switch t {
	case FakeName:
		s := m.stream("name", v)
		return s.name() + " " + s.name()
	case FakeEmail:
		s := m.stream("email", strings.ToLower(strings.TrimSpace(v)))
		first, last := strings.ToLower(s.name()), strings.ToLower(s.name())
		return fmt.Sprintf("%s.%s%04d@%s", first, last, s.intn(10000), emailDomains[s.intn(len(emailDomains))])
	case FakePhone:
		s := m.stream("phone", v)
		p := fmt.Sprintf("555-%03d-%04d", s.intn(1000), s.intn(10000))
		if strings.HasPrefix(strings.TrimSpace(v), "+") {
			p = "+1 " + p
		}
		return p
	case FakeAddress:
		s := m.stream("address", v)
		return fmt.Sprintf("%d %s %s, %s", 1+s.intn(9999), s.name(), streetKinds[s.intn(len(streetKinds))], s.name())
	case Hash:
		mac := hmac.New(sha256.New, m.key)
		mac.Write([]byte("hash\x00"))
		mac.Write([]byte(v))
		return hex.EncodeToString(mac.Sum(nil))[:32]
	case Redact:
		return redact(v)
	}
	panic("mask: Value of transformer " + string(t))
}

// values returns the masked form of each value, cut to maxLen characters,
// computed on every CPU.
func (m *Masker) values(t Transform, vs []string, maxLen int) []string {
	out := make([]string, len(vs))
	workers := runtime.GOMAXPROCS(0)
	chunk := (len(vs) + workers - 1) / workers
	var wg sync.WaitGroup
	for start := 0; start < len(vs); start += chunk {
		end := min(start+chunk, len(vs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := start; i < end; i++ {
				out[i] = Fit(m.Value(t, vs[i]), maxLen)
			}
		}()
	}
	wg.Wait()
	return out
}

// Fit returns v cut to at most n characters (n <= 0: no limit), for
// columns of a bounded length.
func Fit(v string, n int) string {
	if n <= 0 || utf8.RuneCountInString(v) <= n {
		return v
	}
	r := []rune(v)
	return string(r[:n])
}

// ShuffleKey returns the sort key of a row in a shuffled column: rows are
// ordered by it to pick which row's value each row gets. id identifies the
// row (its primary key, or its position).
func (m *Masker) ShuffleKey(column, id string) [32]byte {
	mac := hmac.New(sha256.New, m.key)
	mac.Write([]byte("shuffle\x00" + column + "\x00" + id))
	var out [32]byte
	copy(out[:], mac.Sum(nil))
	return out
}

func redact(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for _, r := range v {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteByte('X')
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// stream is an endless sequence of keyed pseudo-random bytes for one
// (domain, value): HMAC-SHA256(key, domain 0 value 0 counter), block after
// block.
type stream struct {
	m      *Masker
	prefix []byte
	block  uint32
	buf    []byte
}

func (m *Masker) stream(domain, v string) *stream {
	p := make([]byte, 0, len(domain)+len(v)+2)
	p = append(p, domain...)
	p = append(p, 0)
	p = append(p, v...)
	p = append(p, 0)
	return &stream{m: m, prefix: p}
}

func (s *stream) uint32() uint32 {
	if len(s.buf) < 4 {
		mac := hmac.New(sha256.New, s.m.key)
		mac.Write(s.prefix)
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], s.block)
		mac.Write(c[:])
		s.block++
		s.buf = mac.Sum(nil)
	}
	v := binary.BigEndian.Uint32(s.buf)
	s.buf = s.buf[4:]
	return v
}

// intn returns a number in [0, n), without modulo bias.
func (s *stream) intn(n int) int {
	limit := ^uint32(0) - ^uint32(0)%uint32(n)
	for {
		v := s.uint32()
		if v < limit {
			return int(v % uint32(n))
		}
	}
}

// name makes a capitalised word of two or three syllables: pronounceable,
// and made up, so that it is nobody's real name.
func (s *stream) name() string {
	n := 2 + s.intn(2)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(onsets[s.intn(len(onsets))])
		b.WriteString(vowels[s.intn(len(vowels))])
	}
	b.WriteString(codas[s.intn(len(codas))])
	w := b.String()
	return strings.ToUpper(w[:1]) + w[1:]
}

var (
	onsets = []string{"b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m",
		"n", "p", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z", "l", "m", "n", "r", "s", "t", "v"}
	vowels      = []string{"a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ie", "ou", "y"}
	codas       = []string{"", "", "", "", "n", "r", "l", "s", "th", "m", "x", "nd"}
	streetKinds = []string{"Street", "Road", "Avenue", "Lane", "Way", "Drive", "Court", "Place", "Square", "Row"}
	// emailDomains are reserved for examples (RFC 2606): no one's mailbox.
	emailDomains = []string{"example.com", "example.net", "example.org"}
)
