package lcd

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The display package holds the setup code in clear: it must not be able to put it on a network, and it
// stays a low floor (no web, authz or appliance imports).
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{"net/http", "net/rpc", "net/smtp", "log/syslog", "github.com/edgenvr/nvr/appliance/"}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			for _, bad := range forbidden {
				if p == bad || strings.HasPrefix(p, bad) || p == "net" {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
