package appliance

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
)

// recordedAudit records audit events (a unit-test stand-in for authz's audit log).
type recordedAudit struct {
	mu sync.Mutex
	ev []string
}

func (r *recordedAudit) Event(s authz.Subject, action, object, result, reason, source string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = append(r.ev, fmt.Sprintf("%s|%s|%s|%s|%s", s, action, object, result, reason))
}

// TestAccountAuditHeldUntilAttached: camera account events raised before the audit log opens are held
// (bounded, oldest dropped) and written when it is attached; later ones go straight through; none after
// detach.
func TestAccountAuditHeldUntilAttached(t *testing.T) {
	a := accountAudit{log: slog.New(slog.DiscardHandler)}
	for i := range maxHeldAccountEvents + 3 {
		a.event(camera.AccountEvent{Camera: "cam-1", Account: fmt.Sprint("u", i), Action: "delete", Result: "ok", By: "appliance", Cause: "adoption"})
	}
	rec := &recordedAudit{}
	detach := a.attach(rec)
	a.event(camera.AccountEvent{Camera: "cam-1", Account: "builtin", Level: "User", Action: "secure", Result: "ok", By: "appliance", Cause: "audit", Detail: "deletion refused"})
	detach()
	a.event(camera.AccountEvent{Camera: "cam-1", Account: "late", Action: "delete", Result: "ok", By: "appliance"})
	if len(rec.ev) != maxHeldAccountEvents+1 {
		t.Fatalf("%d events written", len(rec.ev))
	}
	if !strings.HasPrefix(rec.ev[0], "appliance (camera-manager") && !strings.HasPrefix(rec.ev[0], "appliance|") {
		t.Errorf("subject of %q", rec.ev[0])
	}
	if !strings.Contains(rec.ev[0], "|camera.account-delete|camera/cam-1/account/u3|ok|adoption:") {
		t.Errorf("first held event %q (the 3 oldest are dropped)", rec.ev[0])
	}
	if last := rec.ev[len(rec.ev)-1]; !strings.Contains(last, "|camera.account-secure|camera/cam-1/account/builtin|ok|audit: deletion refused (level User)") {
		t.Errorf("live event %q", last)
	}
}
