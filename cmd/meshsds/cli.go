package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshsds/meshsds/meshconfig"
)

// resourceItem is a Mesh, Secret or GlobalSecret as the admin API returns
// it.
type resourceItem struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh,omitempty"`
	Name             string            `json:"name"`
	CreationTime     time.Time         `json:"creationTime"`
	ModificationTime time.Time         `json:"modificationTime"`
	Labels           map[string]string `json:"labels,omitempty"`
	MTLS             json.RawMessage   `json:"mtls,omitempty"`
	Data             []byte            `json:"data,omitempty"`
	Status           *meshStatus       `json:"status,omitempty"`
}

// meshStatus is what the admin API says is served for a mesh.
type meshStatus struct {
	Phase     string    `json:"phase"`
	Since     time.Time `json:"since"`
	Waiting   int       `json:"waiting"`
	SigningCA string    `json:"signingCA"`
	TrustedCA []string  `json:"trustedCAs"`
	CAExpiry  time.Time `json:"caExpiry"`
	Warning   string    `json:"warning"`
	Error     string    `json:"error"`
}

// Labels of the admin API saying where a resource comes from
// (secretsource/api).
const (
	labelOrigin = "meshsds.io/origin"
	labelPath   = "meshsds.io/path"
)

// origin shows where a resource comes from: "api", "kubernetes", or
// "file:<path>".
func (it *resourceItem) origin() string {
	o := it.Labels[labelOrigin]
	if o == "" {
		return "-"
	}
	if p := it.Labels[labelPath]; p != "" {
		return o + ":" + p
	}
	return o
}

func newApplyCommand() *cobra.Command {
	var (
		cc   clientConfig
		file string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update Secrets and Meshes from YAML or JSON (several documents allowed)",
		Example: `  meshsds apply -f payments.yaml    # several documents separated by ---; Secrets are applied first
  printf 'type: Secret\nmesh: default\nname: sample-secret\ndata: dGVzdAo=\n' | meshsds apply -f -
  printf 'type: Mesh\nname: payments\nmtls:\n  backends:\n  - name: ca-1\n    type: builtin\n' | meshsds apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("give -f FILE, or -f - for standard input")
			}
			var (
				data []byte
				err  error
			)
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
			objs, err := meshconfig.Decode(data, meshconfig.DecodeOptions{})
			if err != nil {
				return fmt.Errorf("%s is not valid: %w", displayName(file), err)
			}
			if len(objs) == 0 {
				return fmt.Errorf("%s holds no resource", displayName(file))
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			// Secrets first: a Mesh is validated against the secrets its
			// CA backend references, whatever order the file has.
			sort.SliceStable(objs, func(i, j int) bool { return objs[i].Secret != nil && objs[j].Secret == nil })
			for _, o := range objs {
				path, body, label, err := putRequest(o)
				if err != nil {
					return err
				}
				code, err := c.do(cmd.Context(), http.MethodPut, path, body, nil)
				if err != nil {
					return fmt.Errorf("%s: %w", label, err)
				}
				verb := "configured"
				if code == http.StatusCreated {
					verb = "created"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", label, verb)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "file to apply, or - for standard input")
	mustRegister(cmd, "file", manifestFiles)
	addClientFlags(cmd, &cc)
	return cmd
}

// printRaw writes an admin API answer as JSON or YAML.
func printRaw(out io.Writer, output string, raw json.RawMessage) error {
	switch output {
	case "json":
		_, err := fmt.Fprintln(out, string(raw))
		return err
	case "yaml":
		y, err := yaml.JSONToYAML(raw)
		if err == nil {
			_, err = out.Write(y)
		}
		return err
	}
	return fmt.Errorf("-o must be table, yaml or json, not %q", output)
}

func displayName(file string) string {
	if file == "-" {
		return "standard input"
	}
	return file
}

// putRequest turns a decoded object into its PUT path and Universal body.
func putRequest(o meshconfig.Object) (path string, body []byte, label string, err error) {
	switch {
	case o.Secret != nil && o.Secret.Global:
		s := o.Secret
		body, err = json.Marshal(map[string]string{"type": "GlobalSecret", "name": s.Name, "data": base64.StdEncoding.EncodeToString(s.Data)})
		return "/globalsecrets/" + url.PathEscape(s.Name), body, fmt.Sprintf("global secret %q", s.Name), err
	case o.Secret != nil:
		s := o.Secret
		body, err = json.Marshal(map[string]string{"type": meshconfig.KindSecret, "mesh": s.Mesh, "name": s.Name, "data": base64.StdEncoding.EncodeToString(s.Data)})
		return "/meshes/" + url.PathEscape(s.Mesh) + "/secrets/" + url.PathEscape(s.Name), body, fmt.Sprintf("secret %q (mesh %q)", s.Name, s.Mesh), err
	default:
		m := o.Mesh
		body, err = json.Marshal(struct {
			Type string `json:"type"`
			*meshconfig.Mesh
		}{meshconfig.KindMesh, m})
		return "/meshes/" + url.PathEscape(m.Name), body, fmt.Sprintf("mesh %q", m.Name), err
	}
}

// resourceKinds are the kinds "meshsds get" and "meshsds delete" know, by
// the names they take (singular and plural, kumactl's spellings too).
var resourceKinds = map[string]string{
	"mesh": "mesh", "meshes": "mesh",
	"secret": "secret", "secrets": "secret",
	"global-secret": "global-secret", "global-secrets": "global-secret",
	"globalsecret": "global-secret", "globalsecrets": "global-secret",
}

func newGetCommand() *cobra.Command {
	var (
		cc     clientConfig
		mesh   string
		output string
	)
	cmd := &cobra.Command{
		Use:   "get meshes|secrets|global-secrets | get mesh|secret|global-secret NAME",
		Short: "Show Meshes, Secrets and global secrets of every source, with their origin",
		Long: `Show the Meshes, Secrets and global secrets meshsds serves, whichever source
holds them: the ORIGIN column says file (with the file's path), kubernetes or
api. Only resources of origin api can be changed through the admin API.`,
		Example: `  meshsds get meshes
  meshsds get mesh default -o yaml
  meshsds get secrets -m default
  meshsds get secret ca-cert -m default -o json
  meshsds get global-secrets
  meshsds get meshes --control-plane prod`,
		Args:              argsOrUsage(1, 2, "a resource type (meshes, secrets, global-secrets), or a type and a name (mesh default)"),
		ValidArgsFunction: completeResource(&cc, &mesh, "meshes", "secrets", "global-secrets", "mesh", "secret", "global-secret"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "yaml" && output != "json" {
				return fmt.Errorf("-o must be table, yaml or json, not %q", output)
			}
			kind, ok := resourceKinds[args[0]]
			if !ok {
				return fmt.Errorf("unknown resource type %q: use meshes, secrets or global-secrets", args[0])
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			single := len(args) == 2
			var path, label string
			switch {
			case single:
				path, label = resourceRef(kind, args[1], mesh)
			case kind == "mesh":
				path = "/meshes"
			case kind == "secret":
				path = "/secrets"
				if mesh != "" {
					path = "/meshes/" + url.PathEscape(mesh) + "/secrets"
				}
			default:
				path = "/globalsecrets"
			}
			out := cmd.OutOrStdout()
			var items []resourceItem
			if single {
				var raw json.RawMessage
				if _, err := c.do(cmd.Context(), http.MethodGet, path, nil, &raw); err != nil {
					return notFound(err, label)
				}
				if output != "table" {
					return printRaw(out, output, raw)
				}
				var it resourceItem
				if err := json.Unmarshal(raw, &it); err != nil {
					return err
				}
				items = []resourceItem{it}
			} else {
				list, err := c.list(cmd.Context(), path)
				if err != nil {
					return err
				}
				if output != "table" {
					return printList(out, output, list)
				}
				if items, err = decodeItems[resourceItem](list); err != nil {
					return err
				}
			}
			return printTable(out, kind, items, time.Now())
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", "", "mesh of the secrets (default: every mesh; for one secret: default)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	addClientFlags(cmd, &cc)
	mustRegister(cmd, "mesh", completeMeshes(&cc))
	mustRegister(cmd, "output", fixedCompletion("table", "yaml", "json"))
	return cmd
}

// argsOrUsage accepts min to max arguments, and otherwise says what the
// verb wants instead of only counting.
func argsOrUsage(minArgs, maxArgs int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < minArgs || len(args) > maxArgs {
			return fmt.Errorf("%q takes %s; got %d argument(s). See %q", cmd.CommandPath(), want, len(args), cmd.CommandPath()+" --help")
		}
		return nil
	}
}

// resourceRef returns the admin API path of one resource of kind (mesh,
// secret or global-secret) and how messages name it. A secret's mesh
// defaults to "default".
func resourceRef(kind, name, mesh string) (path, label string) {
	switch kind {
	case "secret":
		if mesh == "" {
			mesh = meshconfig.DefaultMesh
		}
		return "/meshes/" + url.PathEscape(mesh) + "/secrets/" + url.PathEscape(name), fmt.Sprintf("secret %q (mesh %q)", name, mesh)
	case "mesh":
		return "/meshes/" + url.PathEscape(name), fmt.Sprintf("mesh %q", name)
	default:
		return "/globalsecrets/" + url.PathEscape(name), fmt.Sprintf("global secret %q", name)
	}
}

// notFound names the resource when the admin API did not find it, and
// returns other errors as they are.
func notFound(err error, label string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return fmt.Errorf("%s not found", label)
	}
	return err
}

// decodeItems decodes the items of a list.
func decodeItems[T any](list page) ([]T, error) {
	out := make([]T, 0, len(list.Items))
	for _, raw := range list.Items {
		var it T
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, fmt.Errorf("the admin API answered an item that is not one: %w", err)
		}
		out = append(out, it)
	}
	return out, nil
}

// printList writes a whole list, every page together, as JSON or YAML in
// Kuma's envelope.
func printList(out io.Writer, output string, list page) error {
	raw, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return printRaw(out, output, raw)
}

func printTable(out io.Writer, kind string, items []resourceItem, now time.Time) error {
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	switch kind {
	case "mesh":
		fmt.Fprintln(tw, "NAME\tMTLS\tORIGIN\tAGE")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Name, mtlsSummary(it.MTLS), it.origin(), age(now.Sub(it.CreationTime)))
		}
	case "global-secret":
		fmt.Fprintln(tw, "NAME\tORIGIN\tAGE")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Name, it.origin(), age(now.Sub(it.CreationTime)))
		}
	default:
		fmt.Fprintln(tw, "MESH\tNAME\tORIGIN\tAGE")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Mesh, it.Name, it.origin(), age(now.Sub(it.CreationTime)))
		}
	}
	return tw.Flush()
}

// mtlsSummary shows the enabled backend as "type/name", or "off".
func mtlsSummary(raw json.RawMessage) string {
	var m meshconfig.MTLS
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return "off"
	}
	b, _, ok := m.Enabled()
	if !ok {
		return "off"
	}
	return b.Type + "/" + b.Name
}

// age formats a duration the way kubectl does: 42s, 5m, 3h, 12d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
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

func newDeleteCommand() *cobra.Command {
	var (
		cc   clientConfig
		mesh string
	)
	cmd := &cobra.Command{
		Use:   "delete secret NAME -m MESH | delete mesh NAME | delete global-secret NAME",
		Short: "Delete a Secret, a Mesh or a global secret held by the admin API",
		Example: `  meshsds delete secret sample-secret -m default
  meshsds delete mesh staging
  meshsds delete global-secret my-key`,
		Args:              argsOrUsage(2, 2, "a resource type and a name (secret NAME, mesh NAME, global-secret NAME)"),
		ValidArgsFunction: completeResource(&cc, &mesh, "secret", "mesh", "global-secret"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cc.client()
			if err != nil {
				return err
			}
			kind, ok := resourceKinds[args[0]]
			if !ok {
				return fmt.Errorf("unknown resource type %q: use secret, mesh or global-secret", args[0])
			}
			path, label := resourceRef(kind, args[1], mesh)
			if _, err := c.do(cmd.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return notFound(err, label)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", label)
			return nil
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", "", "mesh of the secret (default \"default\")")
	addClientFlags(cmd, &cc)
	mustRegister(cmd, "mesh", completeMeshes(&cc))
	return cmd
}

// dataplane is one item of GET /dataplanes.
type dataplane struct {
	Mesh    string `json:"mesh"`
	Name    string `json:"name"`
	Streams []struct {
		API             string    `json:"api"`
		Resources       []string  `json:"resources"`
		LastACK         time.Time `json:"lastAck"`
		LastNACK        time.Time `json:"lastNack"`
		LastNACKMessage string    `json:"lastNackMessage"`
		CertSerial      string    `json:"certSerial"`
		CertExpiry      time.Time `json:"certExpiry"`
	} `json:"streams"`
}

func newInspectCommand() *cobra.Command {
	var (
		cc     clientConfig
		output string
	)
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Inspect live state",
		Example: `  meshsds inspect meshes
  meshsds inspect dataplanes`,
	}
	// list runs a subcommand: every page of path, printed raw or as a table.
	list := func(path string, table func(io.Writer, page, time.Time) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "yaml" && output != "json" {
				return fmt.Errorf("-o must be table, yaml or json, not %q", output)
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			l, err := c.list(cmd.Context(), path)
			if err != nil {
				return err
			}
			if output != "table" {
				return printList(cmd.OutOrStdout(), output, l)
			}
			return table(cmd.OutOrStdout(), l, time.Now())
		}
	}
	meshes := &cobra.Command{
		Use:   "meshes",
		Short: "List the meshes served: origin, CA, the phase of a CA change, problems",
		Example: `  meshsds inspect meshes
  meshsds inspect meshes -o yaml`,
		Args: cobra.NoArgs,
		RunE: list("/meshes", meshesTable),
	}
	dps := &cobra.Command{
		Use:   "dataplanes",
		Short: "List the connected data planes, their streams, certificates and last ACK/NACK",
		Example: `  meshsds inspect dataplanes
  meshsds inspect dataplanes -o json | jq '.items[] | select(.mesh == "default") | .name'`,
		Args: cobra.NoArgs,
		RunE: list("/dataplanes", dataplanesTable),
	}
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	mustRegister(cmd, "output", fixedCompletion("table", "yaml", "json"))
	cmd.AddCommand(meshes, dps)
	addClientFlags(cmd, &cc)
	return cmd
}

// meshesTable shows what is served for each mesh.
func meshesTable(out io.Writer, l page, now time.Time) error {
	items, err := decodeItems[resourceItem](l)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MESH\tORIGIN\tMTLS\tSIGNING CA\tCA EXPIRES\tPHASE\tPROBLEM")
	for _, it := range items {
		ca, expires, phase, problem := "-", "-", "not served", "-"
		if st := it.Status; st != nil {
			ca, expires, phase = dash(st.SigningCA), when(st.CAExpiry, now, "in "), st.Phase
			if st.Phase != "steady" {
				phase += " since " + when(st.Since, now, "")
				if st.Waiting > 0 {
					phase += fmt.Sprintf(", waiting for %d", st.Waiting)
				}
			}
			switch {
			case st.Error != "":
				problem = st.Error
			case st.Warning != "":
				problem = st.Warning
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Name, it.origin(), mtlsSummary(it.MTLS), ca, expires, phase, problem)
	}
	return tw.Flush()
}

// dataplanesTable shows each connected data plane on one line.
func dataplanesTable(out io.Writer, l page, now time.Time) error {
	items, err := decodeItems[dataplane](l)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MESH\tNAME\tSTREAMS\tCERT SERIAL\tCERT EXPIRES\tLAST ACK\tLAST NACK")
	for _, dp := range items {
		var (
			serial          string
			expiry, ack, nk time.Time
			nackMsg         string
			apis            []string
		)
		for _, s := range dp.Streams {
			apis = append(apis, s.API+"("+strings.Join(s.Resources, ",")+")")
			if s.CertSerial != "" {
				serial, expiry = s.CertSerial, s.CertExpiry
			}
			if s.LastACK.After(ack) {
				ack = s.LastACK
			}
			if s.LastNACK.After(nk) {
				nk, nackMsg = s.LastNACK, s.LastNACKMessage
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dp.Mesh, dp.Name, strings.Join(apis, " "), dash(serial),
			when(expiry, now, "in "), when(ack, now, ""), nackText(nk, nackMsg, now))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t, now time.Time, prefix string) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return prefix + age(t.Sub(now))
	}
	return age(now.Sub(t)) + " ago"
}

func nackText(t time.Time, msg string, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return when(t, now, "") + ": " + msg
}
