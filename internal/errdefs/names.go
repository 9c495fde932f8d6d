package errdefs

import (
	"fmt"
	"regexp"
)

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateName checks that name is a lower-case DNS label (RFC 1123): 1 to 63
// characters of a-z, 0-9 and '-', starting and ending with a letter or digit.
// kind ("volume", "snapshot") names the object in the error.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name must not be empty: %w", kind, ErrInvalidArgument)
	}
	if len(name) > 63 {
		return fmt.Errorf("%s name %q is longer than 63 characters: %w", kind, name, ErrInvalidArgument)
	}
	if !labelRE.MatchString(name) {
		return fmt.Errorf("%s name %q must be a lower-case DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit): %w", kind, name, ErrInvalidArgument)
	}
	return nil
}
