// Package store is the appliance's crash-safe index of cameras, recorded
// segments and evidence holds, kept in one bbolt file (DATA/index.db), and the
// retention worker that deletes old segments by age and by free space.
//
// It owns the index file and nothing else: segment files belong to the vault
// package and are only ever deleted here through a caller-supplied Remover.
// It must never import another project package, never hold keys or camera
// credentials (a camera URL with credentials is refused), never delete an
// open segment or one under an evidence hold, and never leave the file in a
// state that Verify rejects, whenever the process is killed.
//
// # Basics
//
// Open the index once per process with [Open]; bbolt takes an exclusive file
// lock, and [Options.Timeout] bounds the wait for it. Every write method is one
// bbolt read-write transaction, committed with fsync before it returns, so a
// nil error means the change survives a crash.
//
// A recording follows the spine contract: [DB.BeginSegment] indexes the
// segment (StateOpen) before its file exists; [DB.UpdateSegment] may record
// progress; [DB.CloseSegment] makes the record final (StateClosed, or
// StateRecovered after a repair). At start-up, [DB.OpenSegments] lists the
// segments to repair. Retention removes a segment's file before its record.
//
// Layout, one top-level bucket each:
//
//	meta      schema version
//	cameras   name -> camera record
//	segments  one bucket per camera: Start (sign-flipped big-endian ns) ‖ ID -> segment record
//	segidx    ID -> record key ‖ camera name
//	open      ID -> empty, for each segment in StateOpen
//	spans     camera -> longest End-Start of its final segments (ns), bounding range queries
//	holds     big-endian hold ID -> hold record
//
// Records use this package's own versioned binary codec ([MarshalSegment],
// [UnmarshalSegment], [MarshalHold], [UnmarshalHold]): a version byte first,
// bounded lengths, no trailing bytes. A record that fails to decode is
// reported as [ErrCorrupt] with its bucket and key, never a panic.
//
// [DB.Verify] runs bbolt's page check and the package's own invariants (index
// entries and records point at each other, the open set matches the states,
// all records decode). Tests run it on every database they open.
//
// # Caveats
//
//   - Write transactions are serialised by bbolt and each costs at least one
//     fsync, so callers should not index every chunk: UpdateSegment is for
//     periodic progress, and the segment file, not the index, is the truth
//     about an open segment's chunks.
//   - A segment's Camera and Start are its key and cannot change after
//     BeginSegment; CloseSegment and UpdateSegment only carry progress fields.
//   - Segments treats an open segment as reaching to the end of any range
//     that begins after its Start, because its file may be ahead of the record.
//   - Holds protect against retention only. DeleteSegment does not consult
//     them; deletions by an operator go through authorisation first.
//   - The hold lock that orders PutHold against retention is per process;
//     bbolt's file lock already keeps a second process out.
//   - The power-cut test kills the writer with SIGKILL, which leaves the page
//     cache intact; it proves transaction atomicity and fsync ordering at the
//     process level, not the disk's honesty about flushes.
//   - Retention by space assumes that deleting a file frees its space at
//     once; on a file system that frees lazily a pass may delete more than
//     needed.
package store
