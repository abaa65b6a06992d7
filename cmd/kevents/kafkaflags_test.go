package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// selfSignedTLS writes a CA-less self-signed server certificate for 127.0.0.1 and returns the
// server's TLS config and the certificate's PEM file, which clients trust as their CA.
func selfSignedTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, ca
}

// TestKafkaSecurityFlags runs `kevents topology apply` and `describe` against a broker that
// demands TLS and SCRAM-SHA-512 (it refuses clients that skip either), configured once by flags
// and once by environment variables.
func TestKafkaSecurityFlags(t *testing.T) {
	serverTLS, ca := selfSignedTLS(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "kevents", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	if out, err := runCLI("topology", "apply", "--brokers", brokers, "--kafka-tls-ca", ca,
		"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-user", "kevents", "--kafka-sasl-password-file", pw); err != nil {
		t.Fatalf("apply over TLS and SCRAM: %v\n%s", err, out)
	}

	for k, v := range map[string]string{"KEVENTS_BROKERS": brokers, "KEVENTS_KAFKA_TLS_CA": ca, "KEVENTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"KEVENTS_KAFKA_SASL_USER": "kevents", "KEVENTS_KAFKA_SASL_PASSWORD_FILE": pw} {
		t.Setenv(k, v)
	}
	out, err := runCLI("topology", "describe")
	if err != nil || !strings.Contains(out, "kevents.commands") {
		t.Fatalf("describe configured from the environment: %v\n%s", err, out)
	}

	if _, err := runCLI("topology", "describe", "--kafka-sasl-mechanism", "GSSAPI"); err == nil || !strings.Contains(err.Error(), `--kafka-sasl-mechanism: "GSSAPI"`) {
		t.Errorf("unknown mechanism: %v; want an error naming the flag and value", err)
	}
	if _, err := runCLI("topology", "describe", "--kafka-tls-cert", ca); err == nil || !strings.Contains(err.Error(), "--kafka-tls-key") {
		t.Errorf("a client certificate without its key: %v; want an error naming both flags", err)
	}
}
