package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/kevents/kevents/api"
)

// Ref resolves one Secret reference of a definition; field names it in errors ("http.tls.caCertSecret").
func (r Resolver) Ref(field string, s *api.SecretKeySelector) (string, error) {
	if s == nil {
		return "", fmt.Errorf("%s: no secret reference", field)
	}
	v, err := r.Resolve(s.Name, s.Key)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return v, nil
}

// TLSConfig builds a client TLS configuration from PEM Secrets: the CA that verifies the server
// (the system's roots when unset), the client certificate and key, and insecureSkipVerify. Unlike
// Argo, insecureSkipVerify does not drop the client certificate. field prefixes the errors
// ("kafka.tls"), which name Secrets but never their contents.
func (r Resolver) TLSConfig(field string, t *api.TLSConfig) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // the user's choice
	if t.CACertSecret != nil {
		ca, err := r.Ref(field+".caCertSecret", t.CACertSecret)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM([]byte(ca)) {
			return nil, fmt.Errorf("%s.caCertSecret: secret %s/%s holds no PEM certificate", field, t.CACertSecret.Name, t.CACertSecret.Key)
		}
	}
	if t.ClientCertSecret != nil && t.ClientKeySecret != nil {
		cert, err := r.Ref(field+".clientCertSecret", t.ClientCertSecret)
		if err != nil {
			return nil, err
		}
		key, err := r.Ref(field+".clientKeySecret", t.ClientKeySecret)
		if err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair([]byte(cert), []byte(key))
		if err != nil {
			// crypto/tls errors describe the PEM blocks, not their contents.
			return nil, fmt.Errorf("%s: client certificate %s/%s and key %s/%s: %w",
				field, t.ClientCertSecret.Name, t.ClientCertSecret.Key, t.ClientKeySecret.Name, t.ClientKeySecret.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
