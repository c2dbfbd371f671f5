package main

import (
	"io"
	"strings"
	"testing"
)

func TestCameraFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
		err  string
	}{
		{[]string{"cam1"}, "cam1", ""},
		{[]string{"entrance", "corridor"}, "entrance,corridor", ""},
		{[]string{"entrance,corridor", "car-park", "corridor"}, "entrance,corridor,car-park", ""},
		{[]string{" a , b "}, "a,b", ""},
		{[]string{"a,,b"}, "", "empty camera name"},
		{[]string{"../etc"}, "", "letters, digits"},
	} {
		var f cameraFlag
		var err error
		for _, a := range c.args {
			if err = f.Set(a); err != nil {
				break
			}
		}
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: err %v, want %q", c.args, err, c.err)
		case c.err == "" && (err != nil || f.String() != c.want):
			t.Errorf("%q: %q, %v; want %q", c.args, f.String(), err, c.want)
		}
	}
}

func TestEvidenceExportUsage(t *testing.T) {
	base := []string{"-evidence", "-data", t.TempDir(), "-from", "2026-01-01T00:00:00Z", "-to", "2026-01-01T00:10:00Z", "-user", "u", "-reason", "r", "-o", t.TempDir() + "/x.zip"}
	for _, c := range []struct {
		extra []string
		want  string
	}{
		{nil, "-camera, -o, -user and -reason are required"},
		{[]string{"-camera", "a;b"}, "letters, digits"},
		{[]string{"-camera", strings.Repeat("c,", 64) + "x"}, ""}, // 65 names, but repeats collapse to 2
	} {
		code, err := evidenceExport(append(append([]string(nil), base...), c.extra...), io.Discard, io.Discard)
		if c.want == "" {
			if code == exitUsage {
				t.Errorf("%v: usage error %v", c.extra, err)
			}
			continue
		}
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: exit %d, %v; want usage error %q", c.extra, code, err, c.want)
		}
	}
	var many []string
	for i := range 65 {
		many = append(many, "c"+strings.Repeat("x", i))
	}
	if code, err := evidenceExport(append(base, "-camera", strings.Join(many, ",")), io.Discard, io.Discard); code != exitUsage || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 cameras: exit %d, %v", code, err)
	}
}
