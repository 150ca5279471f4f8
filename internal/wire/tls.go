package wire

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles names a role's certificate, key and the CA that signs its
// peers. Every connection between roles is mutual TLS.
type TLSFiles struct {
	Cert string `yaml:"cert" json:"cert"`
	Key  string `yaml:"key" json:"key"`
	CA   string `yaml:"ca" json:"ca"`
}

// Validate lists what is missing.
func (f TLSFiles) Validate(prefix string) []error {
	var errs []error
	for _, x := range []struct{ name, v string }{{"cert", f.Cert}, {"key", f.Key}, {"ca", f.CA}} {
		if x.v == "" {
			errs = append(errs, fmt.Errorf("%s.%s: required (a PEM file)", prefix, x.name))
		}
	}
	return errs
}

func (f TLSFiles) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return cert, nil, fmt.Errorf("tls: %w", err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return cert, nil, fmt.Errorf("tls: ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return cert, nil, fmt.Errorf("tls: ca %s holds no PEM certificate", f.CA)
	}
	return cert, pool, nil
}

// ServerConfig is the TLS configuration of a listening role: it presents
// its certificate and requires a client certificate signed by the CA.
func (f TLSFiles) ServerConfig() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientConfig is the TLS configuration of a dialling role: it presents
// its certificate and checks the server's against the CA and serverName.
func (f TLSFiles) ClientConfig(serverName string) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}
