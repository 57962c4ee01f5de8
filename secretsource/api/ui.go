package api

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/secretsource"
)

// The status page (GET /ui): a read-only, server-rendered view of what
// meshsds serves now, for a person: every mesh with its origin, CA and the
// phase of a CA change; the connected data planes with their certificate's
// expiry and last ACK and NACK; and what the sources cannot use. No
// JavaScript (the Content-Security-Policy forbids any), no secret material
// (CAs are shown by subject and fingerprint).

// uiPath is where the status page is served; GET / names it as the GUI.
const uiPath = "/ui"

// uiExpirySoon is how close to its end a certificate is shown as ending.
const uiExpirySoon = 10 * time.Minute

// uiMaxDataplanes caps the data planes the page lists; the rest are
// counted (meshsds inspect dataplanes lists them all).
const uiMaxDataplanes = 500

//go:embed ui.html
var uiHTML string

//go:embed ui.css
var uiCSS string

var (
	uiTemplate = template.Must(template.New("ui").Funcs(template.FuncMap{
		"css": func() template.CSS { return template.CSS(uiCSS) }, // our own constant, never input
	}).Parse(uiHTML))
	// uiCSP allows the page's own style sheet and nothing else.
	uiCSP = func() string {
		sum := sha256.Sum256([]byte(uiCSS))
		return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; frame-ancestors 'none'; form-action 'none'"
	}()
)

// uiData is what the template renders.
type uiData struct {
	Product, Version, Hostname string
	Ready, ReadyKnown          bool
	Now                        time.Time
	Meshes                     []uiMesh
	Dataplanes                 []uiDataplane
	MoreDataplanes             int
	TotalDataplanes            int
	Problems                   []secretsource.Problem
}

// uiMesh is a row of the meshes table.
type uiMesh struct {
	Name, Origin, Path string
	Backend            string // "provided/ca-1", or "off"
	Status             *sds.MeshStatus
	Dataplanes         int
}

// uiDataplane is a row of the data planes table.
type uiDataplane struct {
	Mesh, Name                string
	Streams                   string
	CertSerial                string
	CertExpiry                time.Time
	LastACK, LastNACK         time.Time
	LastNACKMessage           string
	UnknownNames              string
	ConnectedAt               time.Time
	CertExpiresSoon, HasNACKs bool
}

func (a *API) statusPage(w http.ResponseWriter, r *http.Request) {
	d, err := a.uiData(r)
	if err != nil {
		a.storeError(w, "status page", err)
		return
	}
	var buf bytes.Buffer
	if err := uiTemplate.Execute(&buf, d); err != nil {
		a.log.Error("rendering the status page", secretsource.LogErr, err)
		writeError(w, http.StatusInternalServerError, "Internal error", "the status page could not be rendered; see the server log", nil)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func (a *API) uiData(r *http.Request) (*uiData, error) {
	now := a.cfg.Now()
	d := &uiData{Product: Product, Version: a.cfg.Index.Version, Hostname: a.cfg.Index.Hostname, Now: now}
	if a.cfg.Ready != nil {
		d.Ready, d.ReadyKnown = a.cfg.Ready(), true
	}
	meshes, err := a.listItems(r.Context(), kindMesh, "")
	if err != nil {
		return nil, err
	}
	var dps []sds.DataplaneStatus
	if a.cfg.Dataplanes != nil {
		dps = a.cfg.Dataplanes.Dataplanes()
	}
	perMesh := map[string]int{}
	for _, dp := range dps {
		perMesh[dp.Mesh]++
	}
	for _, it := range meshes {
		m := uiMesh{Name: it.name, Origin: it.origin, Path: it.meta.Path, Backend: "off", Dataplanes: perMesh[it.name]}
		if b, _, ok := it.m.MTLS.Enabled(); ok {
			m.Backend = b.Type + "/" + b.Name
		}
		if a.cfg.Status != nil {
			m.Status = a.cfg.Status.MeshStatus(it.name)
		}
		d.Meshes = append(d.Meshes, m)
	}
	d.TotalDataplanes = len(dps)
	if len(dps) > uiMaxDataplanes {
		d.MoreDataplanes = len(dps) - uiMaxDataplanes
		dps = dps[:uiMaxDataplanes]
	}
	for _, dp := range dps {
		d.Dataplanes = append(d.Dataplanes, uiDataplaneOf(dp, now))
	}
	if a.cfg.Problems != nil {
		d.Problems = a.cfg.Problems.Problems()
	}
	return d, nil
}

// uiDataplaneOf sums up a data plane's streams in one row: its current
// certificate, its latest ACK and NACK.
func uiDataplaneOf(dp sds.DataplaneStatus, now time.Time) uiDataplane {
	row := uiDataplane{Mesh: dp.Mesh, Name: dp.Name}
	var streams, unknown []string
	for _, s := range dp.Streams {
		streams = append(streams, s.API+" ("+strings.Join(s.Resources, ", ")+")")
		unknown = append(unknown, s.UnknownNames...)
		if s.CertSerial != "" {
			row.CertSerial, row.CertExpiry = s.CertSerial, s.CertExpiry
		}
		if s.LastACK.After(row.LastACK) {
			row.LastACK = s.LastACK
		}
		if s.LastNACK.After(row.LastNACK) {
			row.LastNACK, row.LastNACKMessage = s.LastNACK, s.LastNACKMessage
		}
		if row.ConnectedAt.IsZero() || s.ConnectedAt.Before(row.ConnectedAt) {
			row.ConnectedAt = s.ConnectedAt
		}
	}
	row.Streams = strings.Join(streams, "; ")
	row.UnknownNames = strings.Join(unknown, ", ")
	row.HasNACKs = !row.LastNACK.IsZero()
	// Certificates are renewed at 4/5 of their lifetime, or end with their
	// token: minutes before the end is worth a look either way.
	row.CertExpiresSoon = !row.CertExpiry.IsZero() && row.CertExpiry.Sub(now) < uiExpirySoon
	return row
}

// relative formats t against now for the page: "in 3h", "12m ago", "-".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + shortDuration(t.Sub(now))
	}
	return shortDuration(now.Sub(t)) + " ago"
}

// shortDuration is d in its largest unit: 42s, 5m, 3h, 12d.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// Rel is relative, for the template.
func (d *uiData) Rel(t time.Time) string { return relative(t, d.Now) }

// Stamp is t in UTC to the second, for the template's title attributes.
func (d *uiData) Stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
