package rootfs

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestUnitSecurity has systemd judge nvrd.service offline: the exposure score must stay "OK" (at most 2.0
// of 10) and the settings the threat model relies on must be there.
func TestUnitSecurity(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not found (Debian's systemd package): %v", err)
	}
	unit := "files/etc/systemd/system/nvrd.service"
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for nvrd\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 2.0 {
		t.Fatalf("exposure %.1f > 2.0:\n%s", score, out)
	}
	for _, want := range []string{
		"✓ User=/DynamicUser=", "✓ NoNewPrivileges=", "✓ ProtectSystem=", "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN",
		"✓ SystemCallFilter=~@mount", "✓ RestrictAddressFamilies=~AF_PACKET", "✓ MemoryDenyWriteExecute=",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("systemd-analyze does not report %q", want)
		}
	}
	verify, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if strings.Contains(string(verify), "Unknown key") || strings.Contains(string(verify), "Unknown section") {
		t.Fatalf("unit has unknown settings: %v\n%s", err, verify)
	}
}
