package daemon

import (
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate from files, reading them again when
// their size or modification time changes.
type certReloader struct {
	certFile, keyFile string

	mu       sync.Mutex
	cert     *tls.Certificate
	certStat [2]fileStamp
}

// fileStamp is what tells a changed file.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// get returns the current certificate; on a failed reload it returns the
// previous one (if any) with the error.
func (r *certReloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var stamps [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return r.cert, err
		}
		stamps[i] = fileStamp{fi.Size(), fi.ModTime()}
	}
	if r.cert != nil && stamps == r.certStat {
		return r.cert, nil
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return r.cert, err
	}
	r.cert, r.certStat = &c, stamps
	return r.cert, nil
}

// getCertificate is a tls.Config.GetCertificate serving the files' current
// certificate, or the previous one (logged) while the files do not load.
func (r *certReloader) getCertificate(log *slog.Logger, what string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := r.get()
		if err != nil {
			log.Error(what+" certificate cannot be loaded; serving the previous one", "err", err)
		}
		return c, nil
	}
}
