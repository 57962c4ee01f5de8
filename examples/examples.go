// Package examples holds no code: it anchors the tests that keep the runnable
// configurations in this directory valid. The configurations themselves are
// envoy/bootstrap.yaml (an Envoy data plane getting its mTLS identity from
// meshsds over SDS), prometheus/prometheus.yml (a scrape job for meshsds),
// grafana/meshsds.json (a dashboard of its metrics), secrets/ (a file-source
// directory with a Mesh using a provided CA) and gen-ca (a program that
// writes that CA).
package examples
