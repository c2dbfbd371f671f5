package evidence

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"io"
	"runtime"
	"strings"
	"testing"
)

func zipOf(tb testing.TB, entries map[string][]byte, method uint16) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.BestCompression) })
	for _, name := range []string{EntryVideo, EntryManifest, EntrySignature, EntryCert, EntryCheckpoint, "../../etc/passwd", "extra"} {
		b, ok := entries[name]
		if !ok {
			continue
		}
		m := method
		if name == EntryVideo {
			m = zip.Store
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: m})
		if err != nil {
			tb.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func fiveEntries() map[string][]byte {
	return map[string][]byte{EntryVideo: []byte("v"), EntryManifest: []byte("{}"), EntrySignature: []byte("s"), EntryCert: []byte("c"), EntryCheckpoint: []byte("k")}
}

// zipSeeds are hostile archives, also the fuzz corpus's starting points.
func zipSeeds(tb testing.TB) [][]byte {
	traversal := fiveEntries()
	traversal["../../etc/passwd"] = []byte("root")
	bomb := fiveEntries()
	bomb[EntryManifest] = make([]byte, maxManifest+1) // compresses to about 64 KiB
	return [][]byte{zipOf(tb, fiveEntries(), zip.Deflate), zipOf(tb, traversal, zip.Deflate), zipOf(tb, bomb, zip.Deflate)}
}

func TestZipReaderRefusesHostileArchives(t *testing.T) {
	seeds := zipSeeds(t)
	many := map[string][]byte{}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range 100 {
		w, _ := zw.Create(strings.Repeat("x", i+1))
		w.Write([]byte{1})
	}
	zw.Close()
	_ = many
	cases := []struct {
		name  string
		b     []byte
		words string
	}{
		{"path traversal", seeds[1], "is not part of an evidence export"},
		{"zip bomb (declared)", seeds[2], "more than"},
		{"too many entries", buf.Bytes(), "entries"},
		{"not a zip", []byte(strings.Repeat("garbage", 10)), "not a zip"},
		{"compressed video", zipOfVideoDeflated(t), "stored uncompressed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			rep := Verify(bytes.NewReader(c.b), int64(len(c.b)), VerifyOptions{})
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if rep.OK() {
				t.Fatal("verified")
			}
			f := rep.Failed()
			if len(f) == 0 || !strings.Contains(f[0].Detail, c.words) {
				t.Fatalf("failed checks %+v, want the first to say %q", f, c.words)
			}
			if grew := int64(after.TotalAlloc) - int64(before.TotalAlloc); grew > 3*maxManifest {
				t.Errorf("verification allocated %d bytes", grew)
			}
		})
	}
}

func TestZipReaderStopsAtDeclaredSize(t *testing.T) {
	lying := lieAboutSize(t, zipOf(t, map[string][]byte{EntryVideo: []byte("v"), EntryManifest: bytes.Repeat([]byte("A"), 1<<20),
		EntrySignature: []byte("s"), EntryCert: []byte("c"), EntryCheckpoint: []byte("k")}, zip.Deflate), EntryManifest, 10)
	z, err := openExportZip(bytes.NewReader(lying), int64(len(lying)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := z.read(EntryManifest)
	if err == nil || len(b) > 10 {
		t.Fatalf("read %d bytes of an entry declared as 10, err %v", len(b), err)
	}
	t.Log(err)
}

func zipOfVideoDeflated(tb testing.TB) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range fiveEntries() {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		w.Write(b)
	}
	zw.Close()
	return buf.Bytes()
}

// lieAboutSize rewrites the declared uncompressed size of name in the central directory to size.
func lieAboutSize(tb testing.TB, b []byte, name string, size uint32) []byte {
	tb.Helper()
	b = bytes.Clone(b)
	i := bytes.LastIndex(b, append([]byte("PK\x01\x02"), []byte{}...))
	for i >= 0 {
		nameLen := int(binary.LittleEndian.Uint16(b[i+28:]))
		if string(b[i+46:i+46+nameLen]) == name {
			binary.LittleEndian.PutUint32(b[i+24:], size)
			return b
		}
		i = bytes.LastIndex(b[:i], []byte("PK\x01\x02"))
	}
	tb.Fatalf("no central directory entry %s", name)
	return nil
}
