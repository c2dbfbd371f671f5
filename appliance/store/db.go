package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket layout. See doc.go for what each holds.
var (
	bucketMeta     = []byte("meta")
	bucketCameras  = []byte("cameras")
	bucketSegments = []byte("segments") // one nested bucket per camera
	bucketIndex    = []byte("segidx")   // segment ID -> location of its record
	bucketOpen     = []byte("open")     // segment ID -> empty, for every open segment
	bucketSpans    = []byte("spans")    // camera -> longest End-Start of its closed segments, ns
	bucketHolds    = []byte("holds")    // big-endian hold ID -> hold record

	keySchema = []byte("schema")
)

// schemaVersion is the layout version written to the meta bucket. Open
// refuses a file written by a newer layout.
const schemaVersion = 1

var allBuckets = [][]byte{bucketMeta, bucketCameras, bucketSegments, bucketIndex, bucketOpen, bucketSpans, bucketHolds,
	bucketLogLeaves, bucketLogHashes, bucketLogCkpts, bucketLogMeta}

// Options configures Open.
type Options struct {
	// Clock gives the time for Camera.Added and Hold.Created when the caller
	// leaves them zero, and for Retention.Run. Nil means time.Now.
	Clock func() time.Time
	// Timeout bounds how long Open waits for bbolt's exclusive file lock
	// when another process holds the index. Zero waits indefinitely.
	Timeout time.Duration
}

// DB is the open index. Its methods are safe for concurrent use. Each write
// is one bbolt transaction, committed and fsync'd before the method returns.
type DB struct {
	bolt  *bolt.DB
	path  string
	clock func() time.Time
	log   *slog.Logger

	// holdMu orders hold changes against retention deletions, so a hold
	// put before a deletion starts always protects the segment.
	holdMu sync.Mutex
}

// Open opens or creates the index file at path with mode 0600 and creates its
// buckets. A nil log discards messages.
func Open(path string, opts Options, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.Timeout,
		NoFreelistSync: false,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{bolt: b, path: path, clock: clock, log: log}
	if err := db.init(); err != nil {
		return nil, errors.Join(fmt.Errorf("store: open %s: %w", path, err), b.Close())
	}
	if fi, err := os.Stat(path); err != nil {
		return nil, errors.Join(fmt.Errorf("store: open %s: %w", path, err), b.Close())
	} else if fi.Mode().Perm() != 0o600 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, errors.Join(fmt.Errorf("store: open %s: %w", path, err), b.Close())
		}
	}
	var open int
	_ = b.View(func(tx *bolt.Tx) error { open = tx.Bucket(bucketOpen).Stats().KeyN; return nil })
	log.Info("index opened", "path", path, "open_segments", open)
	return db, nil
}

// init creates missing buckets and checks the schema version. An index that
// is already complete is only read, so Open costs no commit.
func (db *DB) init() error {
	complete := false
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return nil
			}
		}
		complete = true
		return checkSchema(tx.Bucket(bucketMeta).Get(keySchema))
	})
	if err != nil || complete {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			return checkSchema(v)
		}
		return meta.Put(keySchema, []byte{schemaVersion})
	})
}

func checkSchema(v []byte) error {
	switch {
	case len(v) != 1:
		return fmt.Errorf("%w: meta/schema is %x", ErrCorrupt, v)
	case v[0] > schemaVersion:
		return fmt.Errorf("index schema %d is newer than this build's %d", v[0], schemaVersion)
	}
	return nil
}

// Close closes the index file. Methods called afterwards fail.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", db.path, err)
	}
	return nil
}

// Path returns the index file's path.
func (db *DB) Path() string { return db.path }

// Camera is a camera known to the appliance.
type Camera struct {
	Name     string    // unique; key of the record
	URL      string    // stream URL without credentials
	Added    time.Time // set from the clock by PutCamera when zero
	Disabled bool      // not recorded while set
}

// PutCamera creates or replaces the camera named c.Name. It fails with
// ErrInvalid when the name is empty or a field is too long, or when the URL
// carries credentials (credentials are sealed elsewhere, never indexed).
func (db *DB) PutCamera(c Camera) error {
	if c.Name == "" {
		return fmt.Errorf("store: put camera: %w: empty name", ErrInvalid)
	}
	if u, err := url.Parse(c.URL); err != nil {
		return fmt.Errorf("store: put camera %q: %w: unparsable URL", c.Name, ErrInvalid)
	} else if u.User != nil {
		return fmt.Errorf("store: put camera %q: %w: URL carries credentials", c.Name, ErrInvalid)
	}
	if c.Added.IsZero() {
		c.Added = db.clock()
	}
	v, err := marshalCamera(c)
	if err != nil {
		return err
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCameras).Put([]byte(c.Name), v)
	})
	if err != nil {
		return fmt.Errorf("store: put camera %q: %w", c.Name, err)
	}
	return nil
}

// Cameras returns every camera ordered by name.
func (db *DB) Cameras() ([]Camera, error) {
	var out []Camera
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCameras).ForEach(func(k, v []byte) error {
			c, err := unmarshalCamera(v)
			if err != nil {
				return fmt.Errorf("cameras/%q: %w", k, err)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: cameras: %w", err)
	}
	return out, nil
}

// Camera returns the camera named name, or ErrNotFound.
func (db *DB) Camera(name string) (Camera, error) {
	var c Camera
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCameras).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		c, err = unmarshalCamera(v)
		return err
	})
	if err != nil {
		return Camera{}, fmt.Errorf("store: camera %q: %w", name, err)
	}
	return c, nil
}
