package rootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrialGuard runs the image's trial guard (files/usr/lib/nvr/trial-guard) against a real GRUB
// environment made with grub-editenv, a kernel command line file and a stand-in systemctl that reports
// nvrd's restart count and records a reboot. The qemu image test runs the same script for real.
func TestTrialGuard(t *testing.T) {
	if _, err := exec.LookPath("grub-editenv"); err != nil {
		t.Fatalf("grub-editenv missing (grub-common): %v", err)
	}
	script, err := filepath.Abs("files/usr/lib/nvr/trial-guard")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		slot     string
		env      []string // grub-editenv set arguments
		restarts string
		deadline string
		reboot   bool
		exit     int
		say      string
	}{
		{"confirmed slot", "B", []string{"ORDER=B A", "A_OK=1", "B_OK=1", "A_TRY=0", "B_TRY=0"}, "9", "900", false, 0, "is confirmed"},
		{"crash loop on trial reboots", "B", []string{"ORDER=B A", "A_OK=1", "B_OK=1", "A_TRY=0", "B_TRY=1"}, "3", "900", true, 0, "nvrd.service failed 3 times"},
		{"last attempt, fallback bootable", "B", []string{"ORDER=B A", "A_OK=1", "B_OK=1", "A_TRY=0", "B_TRY=3"}, "5", "900", true, 0, "rebooting"},
		{"deadline passed", "B", []string{"ORDER=B A", "A_OK=1", "B_OK=1", "A_TRY=0", "B_TRY=2"}, "0", "0", true, 0, "not confirmed within 0s"},
		{"nowhere to go", "A", []string{"ORDER=A B", "A_OK=1", "B_OK=0", "A_TRY=3", "B_TRY=0"}, "7", "900", false, 1, "no slot has attempts left"},
		{"no A/B boot", "", []string{"ORDER=A B"}, "7", "0", false, 0, "nothing to guard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			grubenv := filepath.Join(dir, "grubenv")
			run := func(name string, args ...string) {
				if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v %s", name, err, out)
				}
			}
			run("grub-editenv", grubenv, "create")
			run("grub-editenv", append([]string{grubenv, "set"}, tc.env...)...)
			cmdline := filepath.Join(dir, "cmdline")
			line := "root=PARTUUID=4e565231-03 ro quiet"
			if tc.slot != "" {
				line += " rauc.slot=" + tc.slot
			}
			os.WriteFile(cmdline, []byte(line+"\n"), 0o644)
			bin := filepath.Join(dir, "bin")
			os.Mkdir(bin, 0o755)
			marker := filepath.Join(dir, "rebooted")
			fake := "#!/bin/sh\ncase \"$1\" in\n show) echo " + tc.restarts + " ;;\n reboot) touch " + marker + " ;;\nesac\n"
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sh", script)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "NVR_GRUBENV="+grubenv, "NVR_CMDLINE="+cmdline,
				"NVR_TRIAL_MAX_FAILURES=3", "NVR_TRIAL_DEADLINE="+tc.deadline, "NVR_TRIAL_POLL=0.1")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			_, serr := os.Stat(marker)
			if code != tc.exit || (serr == nil) != tc.reboot || !strings.Contains(string(out), tc.say) {
				t.Fatalf("exit %d (want %d), rebooted %v (want %v), output:\n%s(want %q)", code, tc.exit, serr == nil, tc.reboot, out, tc.say)
			}
		})
	}
}
