package journal

import (
	"errors"
	"testing"
)

func TestMachineID(t *testing.T) {
	const canon = "00112233-4455-6677-8899-aabbccddeeff"
	for _, in := range []string{canon, "00112233445566778899AABBCCDDEEFF", "0011-2233-4455-6677-8899-aabb-ccdd-eeff"} {
		id, err := ParseMachineID(in)
		if err != nil {
			t.Fatalf("ParseMachineID(%q): %v", in, err)
		}
		if got := FormatMachineID(id); got != canon {
			t.Errorf("FormatMachineID(ParseMachineID(%q)) = %q, want %q", in, got, canon)
		}
	}
	for _, in := range []string{"", "web01", "../../escaped", "00112233445566778899aabbccddeeff00", "00112233445566778899aabbccddeeg0"} {
		if _, err := ParseMachineID(in); !errors.Is(err, ErrMachineIDText) {
			t.Errorf("ParseMachineID(%q): %v, want ErrMachineIDText", in, err)
		}
	}
}
