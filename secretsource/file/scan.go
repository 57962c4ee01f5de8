package file

import (
	"bytes"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// minManifestLimit is the smallest size limit of a manifest file. The limit
// grows with MaxSecretSize (base64 inflates a payload by a third, and a
// manifest may hold several secrets).
const minManifestLimit = 16 << 20

// watcher is the part of *fsnotify.Watcher a scan uses to follow the
// directories it finds.
type watcher interface {
	Add(path string) error
	Remove(path string) error
	WatchList() []string
}

// candidate is a file the scan reads.
type candidate struct {
	path string
	// raw is set for a raw secret; mesh and name are then its mesh and
	// name, taken from the path.
	raw        bool
	mesh, name string
}

// fileEntry is what the source remembers about one file between scans.
type fileEntry struct {
	// read is set once the file's content has been read; sum is then the
	// SHA-256 of that content.
	read bool
	sum  [sha256.Size]byte
	// good holds the objects of the last content that decoded; hasGood
	// tells a file that was never good from one that was good and empty.
	good    []meshconfig.Object
	hasGood bool
	// errMsg is the current failure of the file, "" when its current
	// content is good. A failure is reported when errMsg changes.
	errMsg string
}

// resourceKey identifies a resource across files.
type resourceKey struct {
	kind string // "Mesh" or "Secret"
	mesh string // the Secret's mesh; empty for Meshes and global Secrets
	name string
}

func (k resourceKey) String() string {
	switch {
	case k.kind == "Mesh":
		return "Mesh " + k.name
	case k.mesh == "":
		return "global Secret " + k.name
	default:
		return "Secret " + k.mesh + "/" + k.name
	}
}

// conflict is a resource defined by two files: loser's definition is ignored
// in favour of winner's.
type conflict struct {
	key           resourceKey
	loser, winner string
}

// state is the source's memory between scans. It is owned by Run's
// goroutine.
type state struct {
	src       *Source
	w         watcher
	files     map[string]*fileEntry
	conflicts map[conflict]struct{}
	// dirErrs holds the current failure of each directory that could not
	// be watched or listed, reported when it changes.
	dirErrs map[string]string
}

func newState(src *Source, w watcher) *state {
	return &state{
		src:       src,
		w:         w,
		files:     make(map[string]*fileEntry),
		conflicts: make(map[conflict]struct{}),
		dirErrs:   make(map[string]string),
	}
}

// scan lists the directory tree, reads every candidate file and returns the
// resulting view. It fails only when the root directory cannot be listed;
// the state is then unchanged.
func (st *state) scan() (meshconfig.Resources, error) {
	var (
		cands      []candidate
		visited    = make(map[string]bool)
		unreadable []string
		dirErrs    = make(map[string]string)
	)
	if err := st.walk(st.src.dir, 0, &cands, visited, &unreadable, dirErrs); err != nil {
		return meshconfig.Resources{}, err
	}
	st.reportDirErrors(dirErrs)

	// Stop watching directories that are gone or now hidden. Errors are
	// expected when the kernel already dropped the watch of a removed
	// directory.
	removed := false
	for _, p := range st.w.WatchList() {
		if !visited[p] {
			_ = st.w.Remove(p)
			removed = true
		}
	}
	if removed {
		// A directory renamed before the watcher processed its move is
		// still watched under its old path, and Add of the new path just
		// returned that watch: removing the old path removed both. Adding
		// again is a no-op for the directories that are still watched.
		for dir := range visited {
			_ = st.w.Add(dir)
		}
	}

	present := make(map[string]bool, len(cands))
	for _, c := range cands {
		if st.load(c) {
			present[c.path] = true
		}
	}
	for p := range st.files {
		if present[p] || underAny(p, unreadable) {
			continue
		}
		delete(st.files, p)
	}

	view := st.view()
	st.src.metrics.lastSync.Set(float64(st.src.now().UnixNano()) / 1e9)
	return view, nil
}

// walk watches dir, then lists it, appending the candidate files to cands.
// Watching before listing makes sure that a file created after the listing
// produces an event. depth is 0 for the root and 1 for <root>/<mesh>.
func (st *state) walk(dir string, depth int, cands *[]candidate, visited map[string]bool, unreadable *[]string, dirErrs map[string]string) error {
	visited[dir] = true
	if err := st.w.Add(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Typically the inotify watch limit. Changes below dir are then
		// seen by the periodic rescan only.
		dirErrs[dir] = fmt.Sprintf("watching directory: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if depth == 0 {
			return fmt.Errorf("listing %s: %w", dir, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since its parent was listed
		}
		dirErrs[dir] = fmt.Sprintf("listing directory: %v", err)
		*unreadable = append(*unreadable, dir)
		return nil
	}
	for _, e := range entries {
		name := e.Name()
		if ignoredName(name) {
			continue
		}
		p := filepath.Join(dir, name)
		typ := e.Type()
		switch {
		case typ.IsDir():
			if err := st.walk(p, depth+1, cands, visited, unreadable, dirErrs); err != nil {
				return err
			}
			continue
		case typ&fs.ModeSymlink != 0:
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				// Dangling, or a link to a directory or device: not
				// followed.
				continue
			}
		case !typ.IsRegular():
			continue
		}
		switch {
		case isManifest(name):
			*cands = append(*cands, candidate{path: p})
		case depth == 1:
			*cands = append(*cands, candidate{path: p, raw: true, mesh: filepath.Base(dir), name: name})
		}
	}
	return nil
}

// reportDirErrors logs and counts directory failures that are new since the
// last scan.
func (st *state) reportDirErrors(cur map[string]string) {
	for _, dir := range sortedKeys(cur) {
		if st.dirErrs[dir] != cur[dir] {
			st.src.log.Warn("directory skipped", secretsource.LogPath, dir, secretsource.LogErr, cur[dir])
			st.src.metrics.syncErrors.Inc()
		}
	}
	st.dirErrs = cur
}

// load reads and, when its content changed, decodes one candidate. It
// returns false when the file is gone.
func (st *state) load(c candidate) bool {
	limit := st.src.maxSecretSize
	if !c.raw {
		limit = max(minManifestLimit, 4*st.src.maxSecretSize)
	}
	data, err := readFile(c.path, limit)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	e := st.files[c.path]
	if e == nil {
		e = &fileEntry{}
		st.files[c.path] = e
	}
	if err != nil {
		e.read = false
		st.fail(c.path, e, err)
		return true
	}
	sum := sha256.Sum256(data)
	if e.read && e.sum == sum {
		return true
	}
	e.read, e.sum = true, sum

	var objs []meshconfig.Object
	switch {
	case len(data) == 0:
		// Most likely truncated by a writer that has not written yet. A
		// manifest meant to be empty can hold a comment.
		err = errEmpty
	case c.raw:
		objs, err = decodeRaw(c, data, st.src.maxSecretSize)
	default:
		objs, err = decodeManifest(data, st.src.maxSecretSize)
	}
	if err != nil {
		st.fail(c.path, e, err)
		return true
	}
	if e.errMsg != "" {
		st.src.log.Info("file is valid again", secretsource.LogPath, c.path)
	}
	e.good, e.hasGood, e.errMsg = objs, true, ""
	return true
}

// fail records the failure of a file, reporting it when it differs from the
// file's current one. The file keeps its last good objects.
func (st *state) fail(path string, e *fileEntry, err error) {
	msg := err.Error()
	if msg == e.errMsg {
		return
	}
	e.errMsg = msg
	if e.hasGood {
		st.src.log.Warn("file rejected; keeping its last good content", secretsource.LogPath, path, secretsource.LogErr, msg)
	} else {
		st.src.log.Warn("file rejected", secretsource.LogPath, path, secretsource.LogErr, msg)
	}
	st.src.metrics.syncErrors.Inc()
}

// view merges the last good objects of every file. When two files define the
// same resource, the lexicographically first path wins and new conflicts are
// reported.
func (st *state) view() meshconfig.Resources {
	res := meshconfig.Resources{
		Meshes:  make(map[string]*meshconfig.Mesh),
		Secrets: make(map[meshconfig.SecretKey]*meshconfig.Secret),
	}
	owner := make(map[resourceKey]string)
	conflicts := make(map[conflict]struct{})
	var fresh []conflict
	for _, p := range sortedKeys(st.files) {
		e := st.files[p]
		if !e.hasGood {
			continue
		}
		for _, obj := range e.good {
			key := keyOf(obj)
			if winner, ok := owner[key]; ok {
				c := conflict{key: key, loser: p, winner: winner}
				conflicts[c] = struct{}{}
				if _, known := st.conflicts[c]; !known {
					fresh = append(fresh, c)
				}
				continue
			}
			owner[key] = p
			if obj.Mesh != nil {
				res.Meshes[obj.Mesh.Name] = obj.Mesh
			} else {
				res.Secrets[meshconfig.SecretKey{Mesh: key.mesh, Name: key.name}] = obj.Secret
			}
		}
	}
	for _, c := range fresh {
		st.src.log.Warn("duplicate resource ignored", secretsource.LogPath, c.loser,
			secretsource.LogErr, fmt.Sprintf("%s is also defined in %s, which wins", c.key, c.winner))
		st.src.metrics.syncErrors.Inc()
	}
	st.conflicts = conflicts
	return res
}

// keyOf returns the identity of a decoded object.
func keyOf(obj meshconfig.Object) resourceKey {
	if obj.Mesh != nil {
		return resourceKey{kind: "Mesh", name: obj.Mesh.Name}
	}
	if obj.Secret.Global {
		return resourceKey{kind: "Secret", name: obj.Secret.Name}
	}
	return resourceKey{kind: "Secret", mesh: obj.Secret.Mesh, name: obj.Secret.Name}
}

// decodeManifest decodes a manifest file. meshconfig.Decode is all or
// nothing, and rejects a file that defines the same resource twice.
func decodeManifest(data []byte, maxSecretSize int) ([]meshconfig.Object, error) {
	return meshconfig.Decode(data, meshconfig.DecodeOptions{MaxSecretSize: maxSecretSize})
}

// decodeRaw turns a raw secret file into a Secret. A PEM file without the END
// line of each block is taken for a file caught in the middle of a write and
// rejected.
func decodeRaw(c candidate, data []byte, maxSecretSize int) ([]meshconfig.Object, error) {
	if fe := meshconfig.ValidateName("mesh", c.mesh); fe != nil {
		return nil, fmt.Errorf("invalid raw secret path: %w", fe)
	}
	if fe := meshconfig.ValidateName("name", c.name); fe != nil {
		return nil, fmt.Errorf("invalid raw secret path: %w", fe)
	}
	if len(data) > maxSecretSize {
		return nil, fmt.Errorf("raw secret larger than %d bytes", maxSecretSize)
	}
	if err := checkPEM(data); err != nil {
		return nil, err
	}
	return []meshconfig.Object{{Secret: &meshconfig.Secret{Mesh: c.mesh, Name: c.name, Data: data}}}, nil
}

// errEmpty rejects a 0-byte file.
var errEmpty = errors.New("empty file (still being written?)")

var pemBegin = []byte("-----BEGIN")

// checkPEM rejects data that starts like PEM but does not decode completely
// as PEM blocks: typically a file truncated before the END line.
func checkPEM(data []byte) error {
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), pemBegin) {
		return nil
	}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
	}
	if bytes.Contains(rest, pemBegin) {
		return errors.New("incomplete PEM: a block has no valid END line (still being written?)")
	}
	return nil
}

// readFile reads at most limit bytes of the regular file at path.
func readFile(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		// Replaced by something else since it was listed.
		return nil, fmt.Errorf("%w: not a regular file", fs.ErrNotExist)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("file larger than %d bytes", limit)
	}
	return data, nil
}

// ignoredName reports whether a file or directory name is skipped: hidden
// names (including Kubernetes' ..data and timestamped directories) and
// editor temporary files.
func ignoredName(name string) bool {
	switch {
	case strings.HasPrefix(name, "."),
		strings.HasSuffix(name, "~"),
		strings.HasSuffix(name, ".swp"),
		strings.HasSuffix(name, ".swx"),
		strings.HasSuffix(name, ".tmp"),
		len(name) > 1 && strings.HasPrefix(name, "#") && strings.HasSuffix(name, "#"):
		return true
	}
	return false
}

// isManifest reports whether a file name is a manifest's.
func isManifest(name string) bool {
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// underAny reports whether path is inside one of dirs.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
