package evidence

import (
	"errors"
	"fmt"
	"sync"
)

// memStore is an in-memory LogStore for tests of the log's logic (the real index is tested with
// store.DB in the other tests).
type memStore struct {
	mu     sync.Mutex
	leaves [][]byte
	hashes map[int64][32]byte
	ckpts  map[uint64][]byte
	meta   map[string][]byte
}

func newMemStore() *memStore {
	return &memStore{hashes: map[int64][32]byte{}, ckpts: map[uint64][]byte{}, meta: map[string][]byte{}}
}

func (m *memStore) LogSize() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.leaves)), nil
}

func (m *memStore) AppendLog(index uint64, leaf []byte, first int64, hs [][32]byte, _ [16]byte, meta map[string][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index != uint64(len(m.leaves)) {
		return errors.New("position taken")
	}
	m.leaves = append(m.leaves, leaf)
	for i, h := range hs {
		m.hashes[first+int64(i)] = h
	}
	for k, v := range meta {
		m.meta[k] = v
	}
	return nil
}

func (m *memStore) LogLeaf(i uint64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i >= uint64(len(m.leaves)) {
		return nil, errors.New("not found")
	}
	return m.leaves[i], nil
}

func (m *memStore) LogHashes(idx []int64) ([][32]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([][32]byte, len(idx))
	for i, x := range idx {
		h, ok := m.hashes[x]
		if !ok {
			return nil, fmt.Errorf("hash %d not found", x)
		}
		out[i] = h
	}
	return out, nil
}

func (m *memStore) PutCheckpoint(size uint64, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ckpts[size] = b
	return nil
}

func (m *memStore) LatestCheckpoint() (uint64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best uint64
	var out []byte
	for s, b := range m.ckpts {
		if out == nil || s > best {
			best, out = s, b
		}
	}
	return best, out, nil
}

func (m *memStore) CheckpointAtLeast(size uint64) (uint64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best uint64
	var out []byte
	for s, b := range m.ckpts {
		if s >= size && (out == nil || s < best) {
			best, out = s, b
		}
	}
	if out == nil {
		return 0, nil, errors.New("not found")
	}
	return best, out, nil
}

func (m *memStore) Checkpoints(fn func(uint64, []byte) error) error {
	m.mu.Lock()
	sizes := make([]uint64, 0, len(m.ckpts))
	for s := range m.ckpts {
		sizes = append(sizes, s)
	}
	m.mu.Unlock()
	for _, s := range sizes {
		if err := fn(s, m.ckpts[s]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) EvidenceMeta(k string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta[k], nil
}
