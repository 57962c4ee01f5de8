package secretsource

import (
	"context"

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
