package appliance

import (
	"log/slog"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/internal/swtpmtest"
)

// BenchmarkAuditAppendAnchored measures audit appends with the audit log anchored in the evidence log (an
// audit leaf in the bbolt index every `every` entries, fsync'd, no TPM signature), against the TPM-signed
// checkpoint in the file that it replaces, on swtpm.
func BenchmarkAuditAppendAnchored(b *testing.B) {
	device := swtpmtest.Start(b)
	for _, bc := range []struct {
		name   string
		every  int
		inFile bool
	}{
		{name: "evidence-anchor/every-256", every: 256},
		{name: "evidence-anchor/every-1", every: 1},
		{name: "tpm-signed-in-file/every-256", every: 256, inFile: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := newAuditRig(b, b.TempDir(), device, bc.every)
			if bc.inFile {
				// The same service, checkpoints signed by the TPM log key into the file (no Anchor).
				if err := r.az.Close(); err != nil {
					b.Fatal(err)
				}
				var err error
				r.az, err = authz.New(authz.Config{DataDir: r.dir, Signer: r.ev.LogKey, CheckpointEvery: bc.every,
					Argon2: authz.Argon2Params{Time: 1, Memory: 64, Threads: 1}}, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
			}
			leaves := r.ev.Log.Size()
			t0 := time.Now()
			for b.Loop() {
				r.az.Event(authz.Subject{User: "operator"}, "live", "camera/cam1", "ok", "", "192.0.2.7")
			}
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "appends/s")
			b.ReportMetric(float64(r.ev.Log.Size()-leaves), "leaves")
		})
	}
}
