// Package grafanatest reads a Grafana dashboard JSON model the way the
// tests of examples/grafana need it: it checks the structure Grafana relies
// on when importing (a datasource and targets on every panel, unique ids, a
// place on the grid), lists every PromQL expression with where it comes
// from, and extracts from each the metric names, the labels it selects on
// and the labels it groups by, to compare with what a real meshsds exports.
//
// The PromQL scan is lexical, not a parser: it finds identifiers with the
// prefixes of Prefixes, the label matchers in the braces that follow them,
// and the labels of "by (...)" clauses. That is enough to catch a renamed or
// missing metric and a filter on a label the metric does not have, which is
// what breaks dashboards silently.
package grafanatest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Prefixes are the prefixes of the metric names a meshsds dashboard queries:
// meshsds' own and the Go and process collectors' it registers too.
var Prefixes = []string{"meshsds_", "process_", "go_"}

// ScrapeLabels are added by Prometheus to every series it scrapes; a
// dashboard may select on them although the target does not export them.
var ScrapeLabels = []string{"instance", "job"}

// Dashboard is the part of Grafana's dashboard JSON model the tests read.
type Dashboard struct {
	Title         string     `json:"title"`
	UID           string     `json:"uid"`
	SchemaVersion int        `json:"schemaVersion"`
	Inputs        []Input    `json:"__inputs"`
	Panels        []Panel    `json:"panels"`
	Templating    Templating `json:"templating"`
}

// Input is an import-time input: Grafana's import dialog asks for it and
// replaces ${Name} throughout the model.
type Input struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	PluginID string `json:"pluginId"`
}

// Panel is a panel or a row.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	GridPos    *GridPos    `json:"gridPos"`
	Targets    []Target    `json:"targets"`
	Panels     []Panel     `json:"panels"` // a row's panels when it is collapsed
	Collapsed  bool        `json:"collapsed"`
}

// Datasource references a datasource by type and uid (or a variable).
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// GridPos is a panel's place on the 24-column grid.
type GridPos struct {
	X int `json:"x"`
	Y int `json:"y"`
	W int `json:"w"`
	H int `json:"h"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *Datasource `json:"datasource"`
}

// Templating holds the dashboard's variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable. Query is a string or, in newer
// versions of the Prometheus editor, an object with a "query" field.
type Variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *Datasource     `json:"datasource"`
	Query      json.RawMessage `json:"query"`
}

// QueryString returns a query variable's PromQL, whichever form it has.
func (v Variable) QueryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var obj struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &obj)
	return obj.Query
}

// Load reads the dashboard at path and fails t unless it has the structure
// Grafana needs (see Validate).
func Load(t testing.TB, path string) *Dashboard {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var d Dashboard
	require.NoError(t, json.Unmarshal(raw, &d), "%s is not a dashboard JSON model", path)
	for _, problem := range d.Validate() {
		t.Errorf("%s: %s", path, problem)
	}
	if t.Failed() {
		t.FailNow()
	}
	return &d
}

// AllPanels returns every panel and row, those inside collapsed rows too.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Validate returns what is wrong with the dashboard's structure: a
// Prometheus datasource input DS_PROMETHEUS and a variable of that name (so
// the model works both through the import dialog and file provisioning);
// unique panel ids; every panel on the grid without overlapping another;
// every panel but rows querying that datasource, with at least one target,
// each with a unique refId and an expression with balanced brackets.
func (d *Dashboard) Validate() []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 {
		add("title, uid and schemaVersion must be set")
	}
	const ds = "${DS_PROMETHEUS}"
	hasInput := false
	for _, in := range d.Inputs {
		hasInput = hasInput || (in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus")
	}
	if !hasInput {
		add(`__inputs: no datasource input DS_PROMETHEUS of plugin "prometheus"`)
	}
	vars := map[string]Variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != ds) {
			add("variable %s: datasource must be %s", v.Name, ds)
		}
	}
	if v, ok := vars["DS_PROMETHEUS"]; !ok || v.Type != "datasource" || v.QueryString() != "prometheus" {
		add("templating: no datasource variable DS_PROMETHEUS of type prometheus")
	}

	ids := map[int]string{}
	var placed []Panel
	for _, p := range d.AllPanels() {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			add("%s: id must be positive", name)
		} else if other, dup := ids[p.ID]; dup {
			add("%s: id also used by %q", name, other)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.Y < 0 || p.GridPos.X+p.GridPos.W > 24 {
			add("%s: gridPos must be set within the 24 columns, got %+v", name, p.GridPos)
			continue
		}
		if p.Title == "" {
			add("%s: a title is needed", name)
		}
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				add("%s: a row has no targets", name)
			}
			if !p.Collapsed && len(p.Panels) > 0 {
				add("%s: an open row's panels follow it at the top level", name)
			}
		} else {
			if p.Datasource == nil || p.Datasource.UID != ds || p.Datasource.Type != "prometheus" {
				add("%s: datasource must be {type: prometheus, uid: %s}, got %+v", name, ds, p.Datasource)
			}
			if len(p.Targets) == 0 {
				add("%s: no targets", name)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					add("%s: every target needs its own refId, got %q", name, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && tg.Datasource.UID != ds {
					add("%s target %s: datasource must be %s", name, tg.RefID, ds)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					add("%s target %s: empty expression", name, tg.RefID)
				} else if err := balanced(tg.Expr); err != nil {
					add("%s target %s: %v in %s", name, tg.RefID, err, tg.Expr)
				}
			}
		}
		// Panels inside a collapsed row are placed when it opens; compare
		// only what is laid out together.
		for _, q := range placed {
			if overlap(*p.GridPos, *q.GridPos) {
				add("%s overlaps panel %d %q", name, q.ID, q.Title)
			}
		}
		placed = append(placed, p)
	}
	return problems
}

func overlap(a, b GridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

// balanced checks (), [] and {} outside string literals.
func balanced(expr string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inString := false
	for i := 0; i < len(expr); i++ {
		c := rune(expr[i])
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %q at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inString || len(stack) > 0 {
		return fmt.Errorf("unclosed %q", string(stack))
	}
	return nil
}

// Query is one PromQL expression of the dashboard and where it is.
type Query struct {
	Where string // e.g. `panel 11 "ACKs and NACKs by API" target B`
	Expr  string
}

// Queries returns every PromQL expression: panel targets and query
// variables.
func (d *Dashboard) Queries() []Query {
	var out []Query
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, Query{Where: "variable " + v.Name, Expr: v.QueryString()})
		}
	}
	for _, p := range d.AllPanels() {
		for _, tg := range p.Targets {
			out = append(out, Query{Where: fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), Expr: tg.Expr})
		}
	}
	return out
}

// Selector is a metric name as an expression uses it, with the names of the
// labels it matches on.
type Selector struct {
	Metric string
	Labels []string
}

// braces matches a label matcher list, with braces inside its quoted values.
const braces = `\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\}`

var (
	labelMatcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"`)
	byClause     = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	labelValues  = regexp.MustCompile(`label_values\(\s*[a-zA-Z_:][a-zA-Z0-9_:]*\s*(?:` + braces + `)?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

func selectorPattern() *regexp.Regexp {
	quoted := make([]string, len(Prefixes))
	for i, p := range Prefixes {
		quoted[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`\b((?:` + strings.Join(quoted, "|") + `)[a-zA-Z0-9_:]+)\s*(` + braces + `)?`)
}

// Selectors returns the metrics an expression reads and the labels it
// matches each on.
func Selectors(expr string) []Selector {
	var out []Selector
	for _, m := range selectorPattern().FindAllStringSubmatch(expr, -1) {
		s := Selector{Metric: m[1]}
		for _, lm := range labelMatcher.FindAllStringSubmatch(m[2], -1) {
			s.Labels = append(s.Labels, lm[1])
		}
		out = append(out, s)
	}
	return out
}

// GroupLabels returns the labels an expression groups by (by, without) or
// asks the values of (label_values).
func GroupLabels(expr string) []string {
	var out []string
	for _, m := range byClause.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	for _, m := range labelValues.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	return out
}

// MetricNames returns the sorted, distinct metric names of every query.
func (d *Dashboard) MetricNames() []string {
	seen := map[string]bool{}
	for _, q := range d.Queries() {
		for _, s := range Selectors(q.Expr) {
			seen[s.Metric] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Exposition is what one scrape of a /metrics endpoint (Prometheus text
// format) holds.
type Exposition struct {
	// Series maps each series name (histograms' _bucket, _sum and _count
	// apart) to the names of the labels its samples carry.
	Series map[string]map[string]bool
	// Types maps each family to its TYPE: counter, gauge, histogram, ...
	Types map[string]string
}

// ParseExposition reads a scrape in the Prometheus text format. Only what
// Check needs is kept: series names, label names and family types.
func ParseExposition(text string) (*Exposition, error) {
	e := &Exposition{Series: map[string]map[string]bool{}, Types: map[string]string{}}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 {
				return nil, fmt.Errorf("line %d: bad TYPE line %q", n+1, line)
			}
			e.Types[f[0]] = f[1]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			return nil, fmt.Errorf("line %d: no metric name in %q", n+1, line)
		}
		name := line[:end]
		labels := e.Series[name]
		if labels == nil {
			labels = map[string]bool{}
			e.Series[name] = labels
		}
		if line[end] == '{' {
			closing := strings.LastIndex(line, "}")
			if closing < end {
				return nil, fmt.Errorf("line %d: unclosed labels in %q", n+1, line)
			}
			for _, m := range labelMatcher.FindAllStringSubmatch(line[end:closing+1], -1) {
				labels[m[1]] = true
			}
		}
	}
	return e, nil
}

// Family returns the family a series name belongs to: the histogram or
// summary X of X_bucket, X_sum and X_count, else the name itself.
func (e *Exposition) Family(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok {
			if t := e.Types[base]; t == "histogram" || t == "summary" {
				return base
			}
		}
	}
	return series
}

// Check compares every query of d with what a server exported and returns
// each problem, naming the query: a metric that is not exported (with the
// suffixes of a histogram told apart), a label matcher on a label the
// metric's series do not carry, and a grouping label that no metric of the
// expression carries. ScrapeLabels are always allowed.
func Check(d *Dashboard, e *Exposition) []string {
	return CheckQueries(d.Queries(), e, nil)
}

// CheckQueries is Check for some queries. A metric for which mayBeAbsent
// is true is not a problem when it is not exported (a counter that only
// exists once something failed); the labels of its expression are then not
// checked either.
func CheckQueries(queries []Query, e *Exposition, mayBeAbsent func(metric string) bool) []string {
	var problems []string
	for _, q := range queries {
		sels := Selectors(q.Expr)
		unknown := false
		for _, s := range sels {
			if _, ok := e.Series[s.Metric]; !ok && mayBeAbsent != nil && mayBeAbsent(s.Metric) {
				unknown = true
			}
		}
		if unknown {
			continue
		}
		if len(sels) == 0 {
			problems = append(problems, fmt.Sprintf("%s: queries no metric with a prefix of %v: %s", q.Where, Prefixes, q.Expr))
		}
		carried := map[string]bool{}
		for _, l := range ScrapeLabels {
			carried[l] = true
		}
		for _, s := range sels {
			labels, ok := e.Series[s.Metric]
			if !ok {
				what := "metric " + s.Metric
				if fam := e.Family(s.Metric); fam != s.Metric {
					what = fmt.Sprintf("series %s of histogram %s", s.Metric, fam)
				} else if t := e.Types[s.Metric]; t == "histogram" || t == "summary" {
					what = fmt.Sprintf("%s %s directly (query its _bucket, _sum or _count)", t, s.Metric)
				}
				problems = append(problems, fmt.Sprintf("%s: %s is not exported", q.Where, what))
				continue
			}
			for l := range labels {
				carried[l] = true
			}
			for _, l := range s.Labels {
				if !labels[l] && !slices.Contains(ScrapeLabels, l) {
					problems = append(problems, fmt.Sprintf("%s: %s has no label %q (it has %s)", q.Where, s.Metric, l, keys(labels)))
				}
			}
		}
		for _, l := range GroupLabels(q.Expr) {
			if !carried[l] {
				problems = append(problems, fmt.Sprintf("%s: groups by %q, which no metric of the expression carries: %s", q.Where, l, q.Expr))
			}
		}
	}
	return problems
}

func keys(m map[string]bool) string {
	if len(m) == 0 {
		return "none"
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
