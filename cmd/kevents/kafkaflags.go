package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kevents/kevents/internal/kclient"
)

// kafkaSecurity is how kevents' own Kafka connections are secured. Secret values are read from
// files (a mounted Secret: Strimzi's KafkaUser Secret has keys user.crt, user.key and password)
// at every connection, so a rotated Secret is picked up without a restart.
type kafkaSecurity struct {
	tls          bool
	ca           string
	cert, key    string
	insecure     bool
	mechanism    string
	user         string
	passwordFile string
	tokenFile    string
}

func (k *kafkaSecurity) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka with TLS (implied by the other --kafka-tls-* flags)")
	f.StringVar(&k.ca, "kafka-tls-ca", "", "PEM file of the CA that signs the brokers' certificates (Strimzi: <cluster>-cluster-ca-cert, key ca.crt); default: the system roots")
	f.StringVar(&k.cert, "kafka-tls-cert", "", "PEM client certificate file for mutual TLS (Strimzi KafkaUser Secret, key user.crt)")
	f.StringVar(&k.key, "kafka-tls-key", "", "PEM client key file for mutual TLS (Strimzi KafkaUser Secret, key user.key)")
	f.BoolVar(&k.insecure, "kafka-tls-insecure", false, "do not verify the brokers' certificates (tests only)")
	f.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty: no SASL")
	f.StringVar(&k.user, "kafka-sasl-user", "", "SASL user name (PLAIN, SCRAM)")
	f.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password (Strimzi KafkaUser Secret, key password)")
	f.StringVar(&k.tokenFile, "kafka-sasl-token-file", "", "file holding the OAUTHBEARER token, re-read at every connection")
}

// apply sets c's TLS and SASL from the flags, checking that the files exist now.
func (k *kafkaSecurity) apply(c *kclient.Config) error {
	if k.tls || k.ca != "" || k.cert != "" || k.key != "" || k.insecure {
		cfg, err := k.tlsConfig()
		if err != nil {
			return err
		}
		c.TLS = cfg
	}
	m, err := k.sasl()
	if err != nil {
		return err
	}
	c.SASL = m
	return nil
}

func (k *kafkaSecurity) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: k.insecure}
	if k.ca != "" {
		pem, err := os.ReadFile(k.ca)
		if err != nil {
			return nil, fmt.Errorf("--kafka-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--kafka-tls-ca: %s holds no PEM certificate", k.ca)
		}
		cfg.RootCAs = pool
	}
	switch {
	case (k.cert == "") != (k.key == ""):
		return nil, errors.New("--kafka-tls-cert and --kafka-tls-key: set both or neither")
	case k.cert != "":
		if _, err := tls.LoadX509KeyPair(k.cert, k.key); err != nil {
			return nil, fmt.Errorf("--kafka-tls-cert/--kafka-tls-key: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(k.cert, k.key)
			return &c, err
		}
	}
	return cfg, nil
}

func (k *kafkaSecurity) sasl() (sasl.Mechanism, error) {
	readFile := func(flag, path string) (string, error) {
		if path == "" {
			return "", fmt.Errorf("%s: missing; the %s mechanism needs it", flag, k.mechanism)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	userPass := func() (string, string, error) {
		if k.user == "" {
			return "", "", fmt.Errorf("--kafka-sasl-user: missing; the %s mechanism needs it", k.mechanism)
		}
		p, err := readFile("--kafka-sasl-password-file", k.passwordFile)
		return k.user, p, err
	}
	var check func() error
	var m sasl.Mechanism
	switch strings.ToUpper(k.mechanism) {
	case "":
		if k.user != "" || k.passwordFile != "" || k.tokenFile != "" {
			return nil, errors.New("--kafka-sasl-mechanism: missing; SASL credentials were given without a mechanism")
		}
		return nil, nil
	case "PLAIN":
		check = func() error { _, _, err := userPass(); return err }
		m = plain.Plain(func(context.Context) (plain.Auth, error) {
			u, p, err := userPass()
			return plain.Auth{User: u, Pass: p}, err
		})
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		check = func() error { _, _, err := userPass(); return err }
		auth := func(context.Context) (scram.Auth, error) {
			u, p, err := userPass()
			return scram.Auth{User: u, Pass: p}, err
		}
		m = scram.Sha256(auth)
		if strings.ToUpper(k.mechanism) == "SCRAM-SHA-512" {
			m = scram.Sha512(auth)
		}
	case "OAUTHBEARER":
		token := func() (string, error) { return readFile("--kafka-sasl-token-file", k.tokenFile) }
		check = func() error { _, err := token(); return err }
		m = oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			t, err := token()
			return oauth.Auth{Token: t}, err
		})
	default:
		return nil, fmt.Errorf("--kafka-sasl-mechanism: %q; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", k.mechanism)
	}
	if err := check(); err != nil {
		return nil, err
	}
	return m, nil
}
