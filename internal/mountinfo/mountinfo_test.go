package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/a\040b`:          "/a b",
		`/tab\011x`:        "/tab\tx",
		`/back\134slash`:   `/back\slash`,
		`/nl\012`:          "/nl\n",
		`/bad\09x`:         `/bad\09x`,
		`/short\04`:        `/short\04`,
		`/end\`:            `/end\`,
		`/two\040\040same`: "/two  same",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
