package netconfig

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
)

// recording is the appliance's recording pipeline (ingest → record → vault → store) for one camera, run in
// this process and so in its network namespace.
type recording struct {
	rec *record.Recorder
}

func startRecording(t testing.TB, name, url, user, password string) *recording {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{Timeout: 5 * time.Second}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutCamera(store.Camera{Name: name, URL: url}); err != nil {
		t.Fatal(err)
	}
	rec, err := record.New(record.Config{Camera: name, DataDir: dir, SegmentDuration: 2 * time.Second,
		VaultKey: key.PublicKey(), Index: db}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Name: name, URL: url, Username: user, Password: password, Transport: "tcp",
		VideoLossAfter: 5 * time.Second}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := rec.Close(); err != nil {
			t.Errorf("close recorder: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close index: %v", err)
		}
	})
	return &recording{rec: rec}
}
