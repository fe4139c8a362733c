package storetest

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
)

// Certs are PEM files for a test's TLS servers and clients, made with
// crypto/x509 in a temp dir: a CA of their own, a server certificate
// signed by it for 127.0.0.1, ::1 and localhost (usable as a client
// certificate too, as Redis nodes use it toward each other), and a client
// certificate signed by it. Keys are ECDSA P-256; everything is valid for a
// day.
type Certs struct {
	Dir                   string
	CA                    string // the CA's certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string

	pool   *x509.CertPool
	client tls.Certificate
}

// NewCerts makes a fresh CA and certificates signed by it. Two calls give
// two unrelated CAs: a client trusting one refuses the other's servers.
func NewCerts(tb testing.TB) *Certs {
	tb.Helper()
	c := &Certs{Dir: tb.TempDir()}
	must := func(err error) {
		if err != nil {
			tb.Helper()
			tb.Fatalf("storetest: certificates: %v", err)
		}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "maple test CA " + filepath.Base(c.Dir)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	caCert, err := x509.ParseCertificate(caDER)
	must(err)
	c.CA = filepath.Join(c.Dir, "ca.crt")
	must(writePEM(c.CA, "CERTIFICATE", caDER))

	leaf := func(name string, serial int64, tmpl *x509.Certificate) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		must(err)
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		must(err)
		certFile, keyFile = filepath.Join(c.Dir, name+".crt"), filepath.Join(c.Dir, name+".key")
		must(writePEM(certFile, "CERTIFICATE", der))
		must(writePEM(keyFile, "PRIVATE KEY", kder))
		return certFile, keyFile
	}
	c.ServerCert, c.ServerKey = leaf("server", 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	c.ClientCert, c.ClientKey = leaf("client", 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "maple test client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	c.pool = x509.NewCertPool()
	c.pool.AddCert(caCert)
	c.client, err = tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
	must(err)
	return c
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// ClientConfig returns a TLS configuration trusting the CA and presenting
// the client certificate: what the harness itself uses toward the servers.
func (c *Certs) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.client}, MinVersion: tls.VersionTLS12}
}

// serverArgs are the redis-server arguments of a TLS-only server on port:
// no plaintext port, the certificates, and --tls-auth-clients auth.
func (c *Certs) serverArgs(port, auth string) []string {
	return []string{"--port", "0", "--tls-port", port,
		"--tls-cert-file", c.ServerCert, "--tls-key-file", c.ServerKey, "--tls-ca-cert-file", c.CA,
		"--tls-auth-clients", auth,
		// Replicas (and Sentinels, which read tls-replication) reach their
		// master over TLS.
		"--tls-replication", "yes"}
}

// cliArgs are redis-cli's arguments to reach the servers.
func (c *Certs) cliArgs() []string {
	return []string{"--tls", "--cacert", c.CA, "--cert", c.ClientCert, "--key", c.ClientKey}
}

// confLines are the same settings as serverArgs, as lines of a config file.
func (c *Certs) confLines(port, auth string) []string {
	args := c.serverArgs(port, auth)
	var lines []string
	for i := 0; i+1 < len(args); i += 2 {
		lines = append(lines, strings.TrimPrefix(args[i], "--")+" "+args[i+1])
	}
	return lines
}

// pingTLS is ping over TLS with cfg (nil: plaintext).
func pingTLS(addr string, cfg *tls.Config) bool {
	if cfg == nil {
		return ping(addr)
	}
	d := &net.Dialer{Timeout: 200 * time.Millisecond}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return false
	}
	return pingOn(c)
}
