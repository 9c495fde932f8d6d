package mask

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func masker(t *testing.T, secret string) *Masker {
	t.Helper()
	m, err := NewMasker([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var formats = map[Transform]*regexp.Regexp{
	FakeName:    regexp.MustCompile(`^[A-Z][a-z]+ [A-Z][a-z]+$`),
	FakeEmail:   regexp.MustCompile(`^[a-z]+\.[a-z]+[0-9]{4}@example\.(com|net|org)$`),
	FakePhone:   regexp.MustCompile(`^(\+1 )?555-[0-9]{3}-[0-9]{4}$`),
	FakeAddress: regexp.MustCompile(`^[0-9]{1,4} [A-Z][a-z]+ [A-Z][a-z]+, [A-Z][a-z]+$`),
	Hash:        regexp.MustCompile(`^[0-9a-f]{32}$`),
}

func TestValueDeterministicAndKeyed(t *testing.T) {
	a, a2, b := masker(t, "secret-a"), masker(t, "secret-a"), masker(t, "secret-b")
	for _, tr := range []Transform{FakeName, FakeEmail, FakePhone, FakeAddress, Hash, Redact} {
		for _, v := range []string{"Alice Martin", "alice@corp.example", "+33 6 12 34 56 78", "4111 1111 1111 1111", "é ü 東京"} {
			got := a.Value(tr, v)
			if again := a2.Value(tr, v); again != got {
				t.Errorf("%s(%q): %q then %q under the same secret", tr, v, got, again)
			}
			if got == v {
				t.Errorf("%s(%q) left the value as it was", tr, v)
			}
			if re := formats[tr]; re != nil && !re.MatchString(got) {
				t.Errorf("%s(%q) = %q, not of the form %s", tr, v, got, re)
			}
			if tr != Redact && b.Value(tr, v) == got {
				t.Errorf("%s(%q) = %q under two secrets", tr, v, got)
			}
		}
	}
}

func TestValueEdgeCases(t *testing.T) {
	m := masker(t, "k")
	for _, tr := range []Transform{FakeName, FakeEmail, FakePhone, FakeAddress, Hash, Redact} {
		if got := m.Value(tr, ""); got != "" {
			t.Errorf("%s(\"\") = %q, want empty", tr, got)
		}
	}
	// Email addresses equal but for case and spaces get one fake.
	if x, y := m.Value(FakeEmail, "Alice@Corp.Example "), m.Value(FakeEmail, "alice@corp.example"); x != y {
		t.Errorf("fake_email is case-sensitive: %q, %q", x, y)
	}
	// The transformers are separate: one value's fakes are unrelated.
	if m.Value(Hash, "x") == m.Value(Hash, "y") {
		t.Error("hash collides")
	}
	if got := m.Value(FakePhone, "06 12 34 56 78"); strings.HasPrefix(got, "+") {
		t.Errorf("fake_phone of a national number = %q", got)
	}
	if got := redact("4111-1111 abc@d.e"); got != "XXXX-XXXX XXX@X.X" {
		t.Errorf("redact = %q", got)
	}
	if got := Fit("Éléonore", 3); got != "Élé" {
		t.Errorf("Fit = %q", got)
	}
	if _, err := NewMasker(nil); err == nil {
		t.Error("an empty secret was accepted")
	}
}

// TestValueSpread checks that fakes are spread enough for unique columns
// and joins: 100,000 distinct values give distinct emails and hashes, and
// names collide rarely.
func TestValueSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	m := masker(t, "spread")
	const n = 100000
	seen := map[Transform]map[string]bool{FakeEmail: {}, Hash: {}, FakeName: {}, FakePhone: {}}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("customer-%d@corp.example", i)
		for tr, s := range seen {
			s[m.Value(tr, v)] = true
		}
	}
	for tr, min := range map[Transform]int{FakeEmail: n, Hash: n, FakeName: n * 99 / 100, FakePhone: n * 99 / 100} {
		if got := len(seen[tr]); got < min {
			t.Errorf("%s: %d distinct fakes of %d values, want at least %d", tr, got, n, min)
		}
	}
}

func TestShuffleKey(t *testing.T) {
	m, m2 := masker(t, "k"), masker(t, "k")
	if m.ShuffleKey("c", "1") == m.ShuffleKey("c", "2") || m.ShuffleKey("c", "1") != m2.ShuffleKey("c", "1") ||
		m.ShuffleKey("c", "1") == m.ShuffleKey("d", "1") {
		t.Error("shuffle keys are not a keyed function of column and row")
	}
}
