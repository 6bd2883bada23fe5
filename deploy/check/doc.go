// Package check validates flowgate's deployment files (Dockerfile, compose,
// Kubernetes kustomizations) in a module of its own, so that the Kubernetes
// API types stay out of the gateway's module. Run: cd deploy/check && go test ./...
package check
