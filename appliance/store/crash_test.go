package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The power-cut test re-executes the test binary as a writer child. The
// child reports each operation on stdout before it starts ("? op n") and
// after its commit returned ("! op n"); the parent SIGKILLs it by PID after a
// random number of lines, reopens the index and checks it.
const (
	crashEnvDir   = "STORE_CRASH_CHILD_DIR"
	crashEnvFirst = "STORE_CRASH_CHILD_FIRST"
	crashEnvSeed  = "STORE_CRASH_CHILD_SEED"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashSegment is the segment the child writes for sequence number n.
func crashSegment(n int) Segment {
	cam := n % 4
	s := testSegment("cam"+strconv.Itoa(cam), cam, n, t0.Add(time.Duration(n)*time.Second), 0, StateOpen)
	s.End = time.Time{}
	return s
}

func crashClosed(n int) Segment {
	s := crashSegment(n)
	s.End, s.Chunks, s.Bytes, s.State, s.LogIndex = s.Start.Add(time.Minute), uint64(n)+1, int64(n)*1000, StateClosed, uint64(n)
	if n%7 == 0 {
		s.State = StateRecovered
	}
	return s
}

// crashChild writes until it is killed: begin n, update n, close n, delete
// n-5 now and then, and a hold every 16 segments. It never returns on its
// own unless an operation fails.
func crashChild(dir string) error {
	first, err := strconv.Atoi(os.Getenv(crashEnvFirst))
	if err != nil {
		return err
	}
	seed, err := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	db, err := Open(filepath.Join(dir, "index.db"), Options{Clock: newClock(t0).Now, Timeout: 10 * time.Second}, nil)
	if err != nil {
		return err
	}
	do := func(op string, n int, fn func() error) error {
		fmt.Printf("? %s %d\n", op, n)
		if err := fn(); err != nil {
			return fmt.Errorf("%s %d: %w", op, n, err)
		}
		fmt.Printf("! %s %d\n", op, n)
		return nil
	}
	for n := first; ; n++ {
		if err := do("begin", n, func() error { return db.BeginSegment(crashSegment(n)) }); err != nil {
			return err
		}
		if rng.IntN(2) == 0 {
			up := crashSegment(n)
			up.End, up.Chunks = up.Start.Add(time.Second), 2
			if err := do("update", n, func() error { return db.UpdateSegment(up) }); err != nil {
				return err
			}
		}
		if rng.IntN(8) != 0 { // some stay open
			if err := do("close", n, func() error { return db.CloseSegment(crashClosed(n)) }); err != nil {
				return err
			}
		}
		if d := n - 5; d >= first && rng.IntN(4) == 0 {
			if err := do("delete", d, func() error { return db.DeleteSegment(crashSegment(d).ID) }); err != nil {
				return err
			}
		}
		if n%16 == 0 {
			h := Hold{Camera: "cam0", From: t0, To: t0.Add(time.Duration(n+1) * time.Second), Reason: "crash " + strconv.Itoa(n)}
			if err := do("hold", n, func() error { _, err := db.PutHold(h); return err }); err != nil {
				return err
			}
		}
	}
}

// crashState is what the parent knows about one segment.
type crashState int

const (
	csBegun crashState = iota + 1
	csUpdated
	csClosed
	csDeleted
)

func TestPowerCut(t *testing.T) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("STORE_CRASH_SEED"); v != "" { // to replay a failure
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	acked := map[int]crashState{}
	holds := map[string]bool{} // reasons of acknowledged holds
	first := 0
	const rounds = 8
	for round := range rounds {
		kill := 1 + rng.IntN(400)
		pending, last := crashRound(t, dir, first, seed+uint64(round), kill, acked, holds)

		db, err := Open(filepath.Join(dir, "index.db"), Options{Clock: newClock(t0).Now, Timeout: 10 * time.Second}, nil)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if err := db.Verify(); err != nil {
			t.Fatalf("round %d: Verify after kill: %v", round, err)
		}
		checkCrashState(t, db, acked, holds, pending)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after %d lines, %d segments known, in flight: %q", round, kill, len(acked), pending)
		first = last + 100 // fresh IDs for the next child
	}
}

// crashRound runs one child, kills it after kill lines, and folds the
// acknowledged operations into acked. It returns the operation in flight at
// the kill ("" if none) and the highest sequence number seen.
func crashRound(t *testing.T, dir string, first int, seed uint64, kill int, acked map[int]crashState, holds map[string]bool) (pending string, last int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvFirst+"="+strconv.Itoa(first), crashEnvSeed+"="+strconv.FormatUint(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	last = first
	sc := bufio.NewScanner(out)
	lines := 0
	for sc.Scan() {
		lines++
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("child said %q", sc.Text())
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		last = max(last, n)
		if f[0] == "?" {
			pending = f[1] + " " + f[2]
		} else {
			pending = ""
			switch f[1] {
			case "begin":
				acked[n] = csBegun
			case "update":
				acked[n] = csUpdated
			case "close":
				acked[n] = csClosed
			case "delete":
				acked[n] = csDeleted
			case "hold":
				holds["crash "+f[2]] = true
			}
		}
		if lines == kill {
			// SIGKILL by PID: no deferred code, no flush, mid-transaction.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill %d: %v", pid, err)
			}
			killed = true
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child %d exited before the kill: %v\n%s", pid, werr, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.ExitCode() != -1 {
		t.Fatalf("child %d ended with %v, want death by signal\n%s", pid, werr, stderr.String())
	}
	return pending, last
}

// checkCrashState asserts that every acknowledged operation survived. The
// one operation in flight at the kill may or may not have committed; its
// outcome is then recorded in acked and holds.
func checkCrashState(t *testing.T, db *DB, acked map[int]crashState, holds map[string]bool, pending string) {
	t.Helper()
	var pendOp string
	pendN := -1
	if pending != "" {
		f := strings.Fields(pending)
		pendOp = f[0]
		pendN, _ = strconv.Atoi(f[1])
	}
	for n, st := range acked {
		s, err := db.Segment(crashSegment(n).ID)
		inFlight := n == pendN
		switch {
		case st == csDeleted:
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("segment %d: deleted but %v", n, err)
			}
		case err != nil:
			if inFlight && pendOp == "delete" && errors.Is(err, ErrNotFound) {
				continue
			}
			t.Fatalf("segment %d (%d acknowledged): %v", n, st, err)
		case st == csClosed:
			if !sameSegment(s, crashClosed(n)) {
				t.Fatalf("segment %d: closed as\n %+v\nwant %+v", n, s, crashClosed(n))
			}
		default: // begun or updated
			if s.State != StateOpen {
				if inFlight && pendOp == "close" && sameSegment(s, crashClosed(n)) {
					continue
				}
				t.Fatalf("segment %d: acknowledged open (in flight %q), found\n %+v\nwant open or %+v", n, pending, s, crashClosed(n))
			}
			if st == csUpdated && s.Chunks != 2 {
				t.Fatalf("segment %d: acknowledged update lost: chunks %d", n, s.Chunks)
			}
		}
	}
	hs, err := db.Holds()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, h := range hs {
		found[h.Reason] = true
	}
	for r := range holds {
		if !found[r] {
			t.Fatalf("acknowledged hold %q lost", r)
		}
	}
	// Settle the operation in flight: what is on disk now is what later
	// rounds must find.
	if pendN >= 0 {
		s, err := db.Segment(crashSegment(pendN).ID)
		switch {
		case pendOp == "hold":
			if found["crash "+strconv.Itoa(pendN)] {
				holds["crash "+strconv.Itoa(pendN)] = true
			}
		case errors.Is(err, ErrNotFound):
			if pendOp == "delete" {
				acked[pendN] = csDeleted
			}
		case err != nil:
			t.Fatal(err)
		case s.State != StateOpen:
			acked[pendN] = csClosed
		case s.Chunks == 2:
			acked[pendN] = csUpdated
		default:
			acked[pendN] = csBegun
		}
	}
	// Every open record is one the child began and never acknowledged
	// closing, so crash recovery has its complete work list.
	open, err := db.OpenSegments()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range open {
		n := int(s.ID[11]) | int(s.ID[10])<<8 | int(s.ID[9])<<16
		if st, ok := acked[n]; ok && st >= csClosed {
			t.Fatalf("segment %d is open but was acknowledged %d", n, st)
		}
	}
}
