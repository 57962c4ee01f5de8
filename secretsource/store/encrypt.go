package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Secrets at rest: Encrypted wraps a Store so that every record's Data is
// kept encrypted (envelope encryption): each record gets a fresh AES-256
// data key, which encrypts the data (AES-256-GCM, bound to the record's
// key, so that a ciphertext cannot be moved to another record), and which
// is itself encrypted (wrapped) by a key-encryption key of a KeyRing. The
// ring's first key wraps new writes; all of its keys unwrap. Records
// written before encryption was turned on are read as they are, and
// written encrypted the next time.

// encMagic starts every encrypted Data. No PEM, YAML, JSON or Kuma token
// starts with a NUL byte.
var encMagic = []byte("\x00MSE1")

// ErrEncrypted is returned when a record is encrypted and no key can
// decrypt it.
var ErrEncrypted = errors.New("encrypted")

// KeyRing holds the key-encryption keys of a key file: one per line, "ID:"
// followed by the base64 of 32 random bytes; "#" starts a comment. The
// first key encrypts, every key decrypts. The file is read again when it
// changes (at most once a second), so that a key added for a rotation is
// used without a restart. It is safe for concurrent use.
type KeyRing struct {
	path string

	mu      sync.Mutex
	keys    []ringKey
	stamp   string
	checked time.Time
}

type ringKey struct {
	id   string
	aead cipher.AEAD
}

// LoadKeyRing reads the key file at path. It fails when the file cannot be
// read, holds no key, a key is not 32 bytes of base64, or an id repeats.
func LoadKeyRing(path string) (*KeyRing, error) {
	r := &KeyRing{path: path}
	if err := r.reload(true); err != nil {
		return nil, err
	}
	return r, nil
}

// GenerateKeyLine returns a new key for a key file: "ID:BASE64".
func GenerateKeyLine(id string) (string, error) {
	if err := validKeyID(id); err != nil {
		return "", err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return id + ":" + base64.StdEncoding.EncodeToString(k), nil
}

func validKeyID(id string) error {
	if id == "" || len(id) > 64 || strings.ContainsAny(id, ": \t#") {
		return fmt.Errorf("key id %q: 1 to 64 characters, without ':', '#' or spaces", id)
	}
	return nil
}

// ParseKeyFile decodes the keys of a key file's content, in order.
func ParseKeyFile(data []byte) ([]string, [][]byte, error) {
	var (
		ids  []string
		keys [][]byte
		seen = map[string]bool{}
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		id, b64, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, fmt.Errorf("line %d: want ID:BASE64KEY", n)
		}
		if err := validKeyID(id); err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", n, err)
		}
		if seen[id] {
			return nil, nil, fmt.Errorf("line %d: key id %q appears twice", n, id)
		}
		seen[id] = true
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(k) != 32 {
			return nil, nil, fmt.Errorf("line %d: key %q must be 32 bytes in base64 (meshsds generate encryption-key makes one)", n, id)
		}
		ids, keys = append(ids, id), append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(ids) == 0 {
		return nil, nil, errors.New("no key: the first line's key encrypts (meshsds generate encryption-key makes one)")
	}
	return ids, keys, nil
}

// reload reads the file if it changed; force reads it in any case.
func (r *KeyRing) reload(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(r.checked) < time.Second {
		return nil
	}
	r.checked = now
	fi, err := os.Stat(r.path)
	if err != nil {
		return fmt.Errorf("--encryption-key-file: %w", err)
	}
	stamp := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
	if !force && stamp == r.stamp {
		return nil
	}
	data, err := os.ReadFile(r.path)
	if err != nil {
		return fmt.Errorf("--encryption-key-file: %w", err)
	}
	ids, keys, err := ParseKeyFile(data)
	if err != nil {
		return fmt.Errorf("--encryption-key-file %s: %w", r.path, err)
	}
	ring := make([]ringKey, len(ids))
	for i := range ids {
		aead, err := newGCM(keys[i])
		if err != nil {
			return err
		}
		ring[i] = ringKey{id: ids[i], aead: aead}
	}
	r.keys, r.stamp = ring, stamp
	return nil
}

// current returns the ring's keys, read again if the file changed; a file
// that no longer loads keeps the last good keys.
func (r *KeyRing) current() []ringKey {
	_ = r.reload(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys
}

// Primary is the id of the key that encrypts.
func (r *KeyRing) Primary() string { return r.current()[0].id }

// newGCM is AES-256-GCM with key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts data for the record at key with the primary key.
func (r *KeyRing) seal(key Key, data []byte) ([]byte, error) {
	kek := r.current()[0]
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return nil, err
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	aad := []byte(key.String())
	wrapNonce := make([]byte, kek.aead.NonceSize())
	if _, err := rand.Read(wrapNonce); err != nil {
		return nil, err
	}
	wrapped := kek.aead.Seal(wrapNonce, wrapNonce, dek, aad)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte(nil), encMagic...)
	out = append(out, byte(len(kek.id)))
	out = append(out, kek.id...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(wrapped)))
	out = append(out, wrapped...)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, data, aad), nil
}

// keyIDOf returns the id of the key that encrypted data, or "" when data
// is not encrypted.
func keyIDOf(data []byte) (string, error) {
	if !bytes.HasPrefix(data, encMagic) {
		return "", nil
	}
	p := data[len(encMagic):]
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", fmt.Errorf("%w: truncated", ErrEncrypted)
	}
	return string(p[1 : 1+int(p[0])]), nil
}

// open decrypts data of the record at key; plain data is returned as it
// is.
func (r *KeyRing) open(key Key, data []byte) ([]byte, error) {
	id, err := keyIDOf(data)
	if err != nil || id == "" {
		return data, err
	}
	if r == nil {
		return nil, fmt.Errorf("%s is %w and no --encryption-key-file is given", key, ErrEncrypted)
	}
	var kek *ringKey
	for _, k := range r.current() {
		if k.id == id {
			kek = &k
			break
		}
	}
	if kek == nil {
		return nil, fmt.Errorf("%s is %w with key %q, which --encryption-key-file does not hold", key, ErrEncrypted, id)
	}
	p := data[len(encMagic)+1+len(id):]
	if len(p) < 2 {
		return nil, fmt.Errorf("%s: %w: truncated", key, ErrEncrypted)
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	ns := kek.aead.NonceSize()
	if len(p) < n || n < ns {
		return nil, fmt.Errorf("%s: %w: truncated", key, ErrEncrypted)
	}
	aad := []byte(key.String())
	dek, err := kek.aead.Open(nil, p[:ns], p[ns:n], aad)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: key %q does not decrypt it (a wrong key, or tampered data)", key, ErrEncrypted, id)
	}
	p = p[n:]
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(p) < aead.NonceSize() {
		return nil, fmt.Errorf("%s: %w: truncated", key, ErrEncrypted)
	}
	plain, err := aead.Open(make([]byte, 0, len(p)), p[:aead.NonceSize()], p[aead.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: tampered data", key, ErrEncrypted)
	}
	return plain, nil
}

// Encrypted is a Store whose records are kept encrypted in inner with
// ring's keys. With a nil ring nothing is encrypted, and reading an
// encrypted record fails with ErrEncrypted: that is what a store opened
// without its key file does.
type Encrypted struct {
	inner Store
	ring  *KeyRing
}

var _ Store = (*Encrypted)(nil)

// NewEncrypted wraps inner.
func NewEncrypted(inner Store, ring *KeyRing) *Encrypted { return &Encrypted{inner: inner, ring: ring} }

func (e *Encrypted) decrypt(rec Record) (Record, error) {
	data, err := e.ring.open(rec.Key, rec.Data)
	if err != nil {
		return Record{}, err
	}
	rec.Data = data
	return rec, nil
}

func (e *Encrypted) encrypt(rec Record) (Record, error) {
	if e.ring == nil {
		return rec, nil
	}
	data, err := e.ring.seal(rec.Key, rec.Data)
	if err != nil {
		return Record{}, fmt.Errorf("encrypting %s: %w", rec.Key, err)
	}
	rec.Data = data
	return rec, nil
}

// Get implements Store.
func (e *Encrypted) Get(ctx context.Context, key Key) (Record, error) {
	rec, err := e.inner.Get(ctx, key)
	if err != nil {
		return rec, err
	}
	return e.decrypt(rec)
}

// List implements Store.
func (e *Encrypted) List(ctx context.Context, kind Kind, mesh string) ([]Record, error) {
	recs, err := e.inner.List(ctx, kind, mesh)
	if err != nil {
		return nil, err
	}
	for i := range recs {
		if recs[i], err = e.decrypt(recs[i]); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Put implements Store.
func (e *Encrypted) Put(ctx context.Context, rec Record, expectVersion int64) (Record, bool, error) {
	plain := append([]byte{}, rec.Data...) // the caller owns rec.Data
	enc, err := e.encrypt(rec)
	if err != nil {
		return Record{}, false, err
	}
	stored, created, err := e.inner.Put(ctx, enc, expectVersion)
	stored.Data = plain
	return stored, created, err
}

// Create implements Store.
func (e *Encrypted) Create(ctx context.Context, rec Record) (Record, error) {
	plain := append([]byte{}, rec.Data...) // the caller owns rec.Data
	enc, err := e.encrypt(rec)
	if err != nil {
		return Record{}, err
	}
	stored, err := e.inner.Create(ctx, enc)
	stored.Data = plain
	return stored, err
}

// Delete implements Store.
func (e *Encrypted) Delete(ctx context.Context, key Key) error { return e.inner.Delete(ctx, key) }

// Revision implements Store.
func (e *Encrypted) Revision(ctx context.Context) (int64, error) { return e.inner.Revision(ctx) }

// Changes implements Store.
func (e *Encrypted) Changes() <-chan struct{} { return e.inner.Changes() }

// Close implements Store.
func (e *Encrypted) Close() error { return e.inner.Close() }

// kinds are every record kind.
var kinds = []Kind{KindMesh, KindSecret, KindGlobalSecret}

// CheckReadable fails when the store holds a record its key ring cannot
// decrypt: at start-up, so that a missing or wrong key file is a clear
// error, not a store that seems empty.
func (e *Encrypted) CheckReadable(ctx context.Context) (encrypted int, err error) {
	for _, kind := range kinds {
		recs, err := e.inner.List(ctx, kind, "")
		if err != nil {
			return 0, err
		}
		for _, rec := range recs {
			id, err := keyIDOf(rec.Data)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", rec.Key, err)
			}
			if id == "" {
				continue
			}
			encrypted++
			if _, err := e.ring.open(rec.Key, rec.Data); err != nil {
				return 0, err
			}
		}
	}
	return encrypted, nil
}

// Rotation is what RotateKeys did.
type Rotation struct {
	Reencrypted, Kept int
}

// RotateKeys re-encrypts with the ring's primary key every record that is
// plain or encrypted with another key, while the store is in use: each
// record is rewritten only if it did not change since it was read (its
// version), and read again otherwise.
func (e *Encrypted) RotateKeys(ctx context.Context) (Rotation, error) {
	var r Rotation
	if e.ring == nil {
		return r, errors.New("no key ring")
	}
	primary := e.ring.Primary()
	for _, kind := range kinds {
		recs, err := e.inner.List(ctx, kind, "")
		if err != nil {
			return r, err
		}
		for _, raw := range recs {
			for attempt := 0; ; attempt++ {
				id, err := keyIDOf(raw.Data)
				if err != nil {
					return r, fmt.Errorf("%s: %w", raw.Key, err)
				}
				if id == primary {
					r.Kept++
					break
				}
				plain, err := e.decrypt(raw)
				if err != nil {
					return r, err
				}
				_, _, err = e.Put(ctx, plain, raw.Version)
				if err == nil {
					r.Reencrypted++
					break
				}
				if !errors.Is(err, ErrConflict) || attempt >= 10 {
					return r, err
				}
				// Written meanwhile (by a writer that encrypts with a key
				// of the ring): read it again.
				if raw, err = e.inner.Get(ctx, raw.Key); errors.Is(err, ErrNotFound) {
					break
				} else if err != nil {
					return r, err
				}
			}
		}
	}
	return r, nil
}
