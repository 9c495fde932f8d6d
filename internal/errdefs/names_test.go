package errdefs

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "db", "db-1", "0", "a0-b1", strings.Repeat("x", 63)} {
		if err := ValidateName("volume", ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "A", "a_b", "a.b", "a b", "é", "a@b", strings.Repeat("x", 64), "a\n"} {
		err := ValidateName("volume", bad)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateName(%q) = %v, want invalid argument", bad, err)
		} else if !strings.HasPrefix(err.Error(), "volume name") {
			t.Errorf("ValidateName(%q) error %q does not name the kind", bad, err)
		}
	}
}
