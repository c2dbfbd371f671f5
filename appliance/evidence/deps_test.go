package evidence

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOfflineVerifierImports enforces that the evidence package (the offline verifier with it) imports
// neither the TPM, nor the index, nor the web server: a court runs it without the appliance.
func TestOfflineVerifierImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/edgenvr/nvr/appliance/evidence").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/edgenvr/nvr/tpm", "github.com/edgenvr/nvr/appliance/store", "github.com/edgenvr/nvr/appliance/web"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("evidence imports %s", dep)
			}
		}
		if strings.HasPrefix(dep, "github.com/edgenvr/nvr/") && dep != "github.com/edgenvr/nvr/appliance/evidence" {
			t.Errorf("evidence imports project package %s; it must stand alone", dep)
		}
	}
}
