package secretsource

import (
	"context"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
)

// Source produces complete views of the resources it owns: a directory, the
// Kubernetes API, the admin API's store.
//
// Run calls publish from one goroutine, first once the source has loaded
// everything (that call marks it synced), then after every change; the
// published Resources belong to the reconciler from then on and are never
// modified. Run returns nil when ctx ends, or an error when the source
// cannot work at all (which stops the daemon); a failure it can recover
// from (an unparsable file, an unreachable API server) is logged and
// counted, and the last good view stays published. Name may be called
// concurrently with Run.
type Source interface {
	Name() string
	Run(ctx context.Context, publish func(meshconfig.Resources)) error
}

// Log keys shared by every package of secretsource, so that one grep (or
// one log query) finds a mesh, a secret or a source whichever part logged
// it. sds has the same keys for its side.
const (
	LogSource  = "source"
	LogMesh    = "mesh"
	LogSecret  = "secret"
	LogBackend = "backend"
	LogPath    = "path"
	LogErr     = "err"
)

// Origins of resources: which kind of source holds them. The admin API shows
// a resource's origin and refuses to write one that files or Kubernetes
// hold.
const (
	OriginFile       = "file"
	OriginKubernetes = "kubernetes"
	OriginAPI        = "api"
)

// Originer is implemented by sources that say which kind of source they
// are (one of the Origin constants).
type Originer interface {
	Origin() string
}

// OriginOf returns src's origin, or its name when it does not say.
func OriginOf(src Source) string {
	if o, ok := src.(Originer); ok {
		return o.Origin()
	}
	return src.Name()
}

// View is the latest complete view one source published, for readers that
// show where each resource comes from. Its Resources must not be modified.
type View struct {
	Source    string // the source's name, e.g. "file:/etc/meshsds/secrets"
	Origin    string // one of the Origin constants
	Resources meshconfig.Resources
}

// Problem is a current failure of a source that does not stop it: a file
// or object it cannot use (its last good content, if any, is still
// served), a directory it cannot watch, the same resource defined twice.
type Problem struct {
	Source string `json:"source"`
	// Subject is what is wrong: a path, "Secret kuma-system/x", "Mesh m".
	Subject string `json:"subject"`
	Message string `json:"message"`
	// Since is when the problem was first seen.
	Since time.Time `json:"since,omitzero"`
}

// ProblemReporter is implemented by sources that keep their current
// problems. Problems may be called from any goroutine, concurrently with
// Run; the result is a fresh slice, sorted by subject.
type ProblemReporter interface {
	Problems() []Problem
}
