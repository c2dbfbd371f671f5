package update

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestGRUBEnv and TestUBootEnv run the real tools on real environment blocks.
func TestGRUBEnv(t *testing.T) {
	need(t, "grub-editenv")
	ctx := context.Background()
	g := GRUBEnv{Path: filepath.Join(t.TempDir(), "grubenv")}
	if err := g.Set(ctx, map[string]string{"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "2"}); err != nil {
		t.Fatal(err)
	}
	env, err := g.Env(ctx)
	if err != nil || env["ORDER"] != "A B" {
		t.Fatalf("%v %v", env, err)
	}
	if trial, _, _ := g.Trial(ctx, "A"); trial {
		t.Fatal("A on trial")
	}
	if trial, left, _ := g.Trial(ctx, "B"); !trial || left != 1 {
		t.Fatalf("B: trial=%v left=%d", trial, left)
	}
	if err := g.Set(ctx, map[string]string{"BAD=NAME": "x"}); err == nil {
		t.Fatal("bad name accepted")
	}
}

func TestUBootEnv(t *testing.T) {
	need(t, "fw_setenv", "fw_printenv")
	dir := t.TempDir()
	envFile := filepath.Join(dir, "uboot.env")
	if err := os.WriteFile(envFile, make([]byte, 0x4000), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfg, []byte(envFile+" 0x0 0x4000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defaults := filepath.Join(dir, "defaults.txt")
	if err := os.WriteFile(defaults, []byte("BOOT_ORDER A B\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "fw_setenv", "-c", cfg, "-f", defaults, "BOOT_ORDER", "A B")
	ctx := context.Background()
	u := UBootEnv{Config: cfg}
	if err := u.Set(ctx, map[string]string{"BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"}); err != nil {
		t.Fatal(err)
	}
	env, err := u.Env(ctx)
	if err != nil || env["BOOT_ORDER"] != "A B" || env["BOOT_B_LEFT"] != "1" {
		t.Fatalf("%v %v", env, err)
	}
	if trial, _, _ := u.Trial(ctx, "A"); trial {
		t.Fatal("A on trial")
	}
	if trial, left, _ := u.Trial(ctx, "B"); !trial || left != 1 {
		t.Fatalf("B: trial=%v left=%d", trial, left)
	}
}
