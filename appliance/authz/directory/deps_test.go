package directory

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules: the daemon never links the test servers' helper, and authz does not import this
// package (authz defines the interface; the wiring installs the implementation).
func TestImportRules(t *testing.T) {
	for pkg, banned := range map[string]string{
		"github.com/edgenvr/nvr/cmd/nvrd":        "github.com/edgenvr/nvr/appliance/authz/directory/dirtest",
		"github.com/edgenvr/nvr/appliance/authz": "github.com/edgenvr/nvr/appliance/authz/directory",
	} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if l == banned {
				t.Errorf("%s imports %s", pkg, banned)
			}
		}
	}
}
