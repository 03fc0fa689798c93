package keyring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RingKey is the KV key (in LK_SECRETS) of the ring state.
const RingKey = "ring"

// maxCASRetries bounds compare-and-swap loops against concurrent writers.
const maxCASRetries = 16

// Options configure Open.
type Options struct {
	Roots Roots
	// Rand is the source of the ring id; Now stamps new versions.
	Rand   io.Reader
	Now    func() time.Time
	Logger *slog.Logger
}

// Keeper holds the ring state of one replica: it creates the ring on first start,
// checks the configured root keys against it, keeps it fresh with a KV watch (so a
// rotation by another replica is seen within milliseconds), and changes it only by
// compare-and-swap.
type Keeper struct {
	kv   jetstream.KeyValue
	opts Options

	mu      sync.RWMutex // guards state, rev and masters
	state   *State
	rev     uint64
	masters map[uint32]Key

	watch jetstream.KeyWatcher
	done  chan struct{}
}

// Open loads (or creates) the ring in kv, checks the configured roots against it,
// registers roots it has not seen, and starts watching it. Close stops the watch.
func Open(ctx context.Context, kv jetstream.KeyValue, opts Options) (*Keeper, error) {
	if len(opts.Roots) == 0 {
		return nil, fmt.Errorf("opening key ring: %w: none configured", ErrInvalidRoots)
	}
	k := &Keeper{kv: kv, opts: opts, masters: make(map[uint32]Key), done: make(chan struct{})}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	if err := k.registerRoots(ctx); err != nil {
		return nil, err
	}
	st := k.State()
	v, _ := st.Find(st.Current)
	if _, ok := opts.Roots[v.Root]; !ok {
		return nil, fmt.Errorf("opening key ring: the current master key version %d is derived from root key v%d: %w: add v%d back to the vault keys", st.Current, v.Root, ErrRootMissing, v.Root)
	}
	// The watch outlives Open's context; Close stops it.
	w, err := kv.Watch(context.WithoutCancel(ctx), RingKey, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watching key ring: %w", err)
	}
	k.watch = w
	go k.follow()
	return k, nil
}

// load reads the ring, creating it when absent (racing replicas: one Create wins).
func (k *Keeper) load(ctx context.Context) error {
	for range maxCASRetries {
		e, err := k.kv.Get(ctx, RingKey)
		if err == nil {
			return k.adopt(e.Value(), e.Revision())
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("reading key ring: %w", err)
		}
		id := make([]byte, 16)
		if _, err := io.ReadFull(k.opts.Rand, id); err != nil {
			return fmt.Errorf("creating key ring id: %w", err)
		}
		root := k.opts.Roots.Newest()
		st := &State{
			Format: stateFormat, ID: id, Current: 1, Min: 1,
			Versions: []Version{{Version: 1, Root: root, Created: k.opts.Now().UTC()}},
			Roots:    map[uint32]string{root: KeyCheck(k.opts.Roots[root])},
		}
		b, err := encodeState(st)
		if err != nil {
			return err
		}
		rev, err := k.kv.Create(ctx, RingKey, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating key ring: %w", err)
		}
		k.opts.Logger.InfoContext(ctx, "created the vault key ring", "current_version", 1, "root_version", root)
		return k.adopt(b, rev)
	}
	return errors.New("creating key ring: too many concurrent writers")
}

// registerRoots checks each configured root against the ring's key checks and
// records the ones it has not seen, so RotateKey can derive from them.
func (k *Keeper) registerRoots(ctx context.Context) error {
	for range maxCASRetries {
		st, rev := k.snapshot()
		var missing []uint32
		for _, v := range k.opts.Roots.Versions() {
			kc, ok := st.Roots[v]
			switch {
			case !ok:
				missing = append(missing, v)
			case kc != KeyCheck(k.opts.Roots[v]):
				return fmt.Errorf("opening key ring: root key v%d: %w the one this vault was set up with: restore the original v%d, or give the new key a new version", v, ErrRootMismatch, v)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		next := st.clone()
		for _, v := range missing {
			next.Roots[v] = KeyCheck(k.opts.Roots[v])
		}
		err := k.swap(ctx, next, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if err := k.load(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		k.opts.Logger.InfoContext(ctx, "registered new vault root keys", "root_versions", missing)
		return nil
	}
	return errors.New("registering root keys: too many concurrent writers")
}

// adopt makes b (at revision rev) the cached state unless a newer one is cached.
func (k *Keeper) adopt(b []byte, rev uint64) error {
	st, err := decodeState(b)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if rev > k.rev {
		k.state, k.rev = st, rev
	}
	return nil
}

// swap writes next if the ring is still at revision rev, and caches it.
func (k *Keeper) swap(ctx context.Context, next *State, rev uint64) error {
	if err := next.validate(); err != nil {
		return fmt.Errorf("changing key ring: %w", err)
	}
	b, err := encodeState(next)
	if err != nil {
		return err
	}
	nrev, err := k.kv.Update(ctx, RingKey, b, rev)
	if err != nil {
		return fmt.Errorf("changing key ring: %w", err)
	}
	return k.adopt(b, nrev)
}

// follow applies ring updates written by any replica until Close.
func (k *Keeper) follow() {
	defer close(k.done)
	for e := range k.watch.Updates() {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		if err := k.adopt(e.Value(), e.Revision()); err != nil {
			k.opts.Logger.Error("ignoring an unreadable key ring update", "revision", e.Revision(), "error", err)
		}
	}
}

// Close stops following the ring.
func (k *Keeper) Close() {
	if k.watch == nil {
		return
	}
	_ = k.watch.Stop()
	<-k.done
}

func (k *Keeper) snapshot() (*State, uint64) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.state, k.rev
}

// State returns a copy of the cached ring state.
func (k *Keeper) State() *State {
	st, _ := k.snapshot()
	return st.clone()
}

// Current returns the version that encrypts and its master key.
func (k *Keeper) Current() (uint32, Key, error) {
	st, _ := k.snapshot()
	key, err := k.master(st, st.Current, false)
	return st.Current, key, err
}

// ForDecrypt returns master key version v, refusing unknown versions, versions below
// the minimum decryption version and versions whose root key is not configured.
func (k *Keeper) ForDecrypt(v uint32) (Key, error) {
	st, _ := k.snapshot()
	return k.master(st, v, true)
}

func (k *Keeper) master(st *State, v uint32, checkMin bool) (Key, error) {
	ver, ok := st.Find(v)
	if !ok {
		return Key{}, fmt.Errorf("%w: the ciphertext names version %d, this vault has versions %d to %d", ErrUnknownVersion, v, st.Versions[0].Version, st.Versions[len(st.Versions)-1].Version)
	}
	if checkMin && v < st.Min {
		return Key{}, fmt.Errorf("%w: the ciphertext is wrapped under version %d, below the minimum decryption version %d (lower the minimum to read it, then rewrap it)", ErrBelowMinimum, v, st.Min)
	}
	root, ok := k.opts.Roots[ver.Root]
	if !ok {
		return Key{}, fmt.Errorf("%w: master key version %d is derived from root key v%d, which this vault was not given", ErrRootMissing, v, ver.Root)
	}
	k.mu.RLock()
	key, ok := k.masters[v]
	k.mu.RUnlock()
	if ok {
		return key, nil
	}
	key = MasterKey(root, st.ID, v)
	k.mu.Lock()
	k.masters[v] = key
	k.mu.Unlock()
	return key, nil
}

// Rotate adds a new master key version, derived from the newest configured root
// key, and makes it current. It is one compare-and-swap: it either happens whole or
// not at all.
func (k *Keeper) Rotate(ctx context.Context) (uint32, error) {
	return k.change(ctx, func(st *State) (*State, error) {
		if st.Current == math.MaxUint32 {
			return nil, errors.New("no master key versions left")
		}
		return st.withNewVersion(k.opts.Roots.Newest(), k.opts.Now()), nil
	})
}

// SetMinimum sets the minimum decryption version, which must be between 1 and the
// current version.
func (k *Keeper) SetMinimum(ctx context.Context, minimum uint32) error {
	_, err := k.change(ctx, func(st *State) (*State, error) {
		if minimum < 1 || minimum > st.Current {
			return nil, fmt.Errorf("%w: %d is not between 1 and the current version %d", ErrInvalidMinimum, minimum, st.Current)
		}
		next := st.clone()
		next.Min = minimum
		return next, nil
	})
	return err
}

// change applies edit to the freshest ring with compare-and-swap, retrying on
// conflicts, and returns the resulting current version.
func (k *Keeper) change(ctx context.Context, edit func(*State) (*State, error)) (uint32, error) {
	for range maxCASRetries {
		e, err := k.kv.Get(ctx, RingKey)
		if err != nil {
			return 0, fmt.Errorf("reading key ring: %w", err)
		}
		st, err := decodeState(e.Value())
		if err != nil {
			return 0, err
		}
		next, err := edit(st)
		if err != nil {
			return 0, err
		}
		err = k.swap(ctx, next, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return next.Current, nil
	}
	return 0, errors.New("changing key ring: too many concurrent writers, try again")
}
