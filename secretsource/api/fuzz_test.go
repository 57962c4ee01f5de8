package api

import (
	"testing"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource/store"
)

// FuzzDecodeOne feeds arbitrary PUT bodies to the request decoder: it must
// never panic, and whatever it accepts matches the URL and validates.
func FuzzDecodeOne(f *testing.F) {
	for _, seed := range []string{
		"type: Secret\nmesh: default\nname: s\ndata: dGVzdAo=\n",
		`{"type":"Secret","name":"s","data":"eA=="}`,
		"type: Mesh\nname: default\nmtls:\n  backends:\n  - name: ca-1\n    type: provided\n    config:\n      cert: {secret: c}\n      key: {secret: k}\n",
		"type: Secret\nname: s\ndata: '!!!'\n", "- a\n", "", "null", "type: [", "---\n---\n",
	} {
		f.Add([]byte(seed))
	}
	a, err := New(Config{Store: nopStore{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, kind := range []string{meshconfig.KindSecret, meshconfig.KindMesh} {
			obj, err := a.decodeOne(body, kind, "default", "s")
			if err != nil {
				continue
			}
			switch kind {
			case meshconfig.KindSecret:
				if obj.Secret == nil || obj.Secret.Name != "s" || obj.Secret.Mesh != "default" || obj.Secret.Global {
					t.Fatalf("accepted a secret that does not match the URL: %+v", obj)
				}
				if err := obj.Secret.Validate(meshconfig.DefaultMaxSecretSize); err != nil {
					t.Fatalf("accepted an invalid secret: %v", err)
				}
			case meshconfig.KindMesh:
				if obj.Mesh == nil || obj.Mesh.Name != "s" {
					t.Fatalf("accepted a mesh that does not match the URL: %+v", obj)
				}
				if err := obj.Mesh.Validate(); err != nil {
					t.Fatalf("accepted an invalid mesh: %v", err)
				}
			}
		}
	})
}

// FuzzDecodeTokenRequest: never panics; an accepted request has valid names
// and a positive validity.
func FuzzDecodeTokenRequest(f *testing.F) {
	for _, seed := range []string{
		`{"mesh":"default","name":"web-1","tags":{"kuma.io/service":["web"]},"validFor":"24h"}`,
		`{"mesh":"default","name":"web-1"}`, `{"validFor":"-1s"}`, `[]`, `mesh: a`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, validFor, err := decodeTokenRequest(body)
		if err != nil {
			return
		}
		if validFor <= 0 || meshconfig.ValidateName("mesh", req.Mesh) != nil || meshconfig.ValidateName("name", req.Name) != nil {
			t.Fatalf("accepted %+v valid for %v", req, validFor)
		}
	})
}

// nopStore satisfies store.Store for decoder fuzzing, which never touches it.
type nopStore struct{ store.Store }
