package main

import (
	"encoding/json"
	"net/http"

	"github.com/meshsds/meshsds/sds"
)

// adminHandler serves the part of the admin HTTP API that exists so far:
// GET /dataplanes, the connected data planes and their streams.
func adminHandler(server *sds.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dataplanes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"items": server.Dataplanes()})
	})
	return mux
}
