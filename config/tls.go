package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// CertPool reads CAFile; nil, nil when none is set (the system's roots).
func (t UpstreamTLS) CertPool() (*x509.CertPool, error) {
	if t.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
	}
	return pool, nil
}

// ClientConfig is the TLS configuration for dialing https:// upstreams.
// Callers set ServerName per upstream unless t.ServerName overrides it.
func (t UpstreamTLS) ClientConfig() (*tls.Config, error) {
	pool, err := t.CertPool()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		RootCAs:            pool,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	}, nil
}
