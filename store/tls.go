package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// TLSOptions say how the farm's processes reach Redis over TLS: the
// --redis-tls-* flags of every maple command that takes --redis. The zero
// value adds nothing: a TLS URL (rediss://, rediss-sentinel://,
// rediss-cluster://) then verifies the servers against the system's
// certificate pool (SSL_CERT_FILE, SSL_CERT_DIR).
type TLSOptions struct {
	// CA is a PEM file of the certificate authorities that servers'
	// certificates must chain to, instead of the system's pool.
	CA string
	// Cert and Key are PEM files of a client certificate and its private
	// key, for servers that ask for one (tls-auth-clients yes or
	// optional). Both or neither.
	Cert, Key string
	// ServerName is the name every server's certificate must carry, and
	// the SNI sent. Empty: the host of each address dialled (on a Cluster,
	// each node's address as the cluster reports it; with Sentinel, each
	// Sentinel's and the master's).
	ServerName string
	// Insecure skips the verification of the servers' certificates: the
	// connection is encrypted but anyone in between can read it. For tests
	// only.
	Insecure bool
}

// IsZero reports whether o sets nothing.
func (o TLSOptions) IsZero() bool { return o == TLSOptions{} }

// Config builds the TLS configuration that every connection to Redis uses:
// TLS 1.2 or newer, servers verified against CA (or the system's pool)
// unless Insecure, the client certificate if given. A file that cannot be
// read or holds no usable certificate or key is an error naming it.
func (o TLSOptions) Config() (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		InsecureSkipVerify: o.Insecure, //nolint:gosec // an explicit switch, for tests only
	}
	if o.CA != "" {
		pem, err := os.ReadFile(o.CA)
		if err != nil {
			return nil, fmt.Errorf("store: redis TLS: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store: redis TLS: CA file %s holds no PEM certificate", o.CA)
		}
		c.RootCAs = pool
	}
	switch {
	case o.Cert != "" && o.Key != "":
		if err := readable(o.Cert, "client certificate"); err != nil {
			return nil, err
		}
		if err := readable(o.Key, "client key"); err != nil {
			return nil, err
		}
		pair, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return nil, fmt.Errorf("store: redis TLS: client certificate %s with key %s: %w", o.Cert, o.Key, err)
		}
		c.Certificates = []tls.Certificate{pair}
	case o.Cert != "":
		return nil, fmt.Errorf("store: redis TLS: client certificate %s given without its key", o.Cert)
	case o.Key != "":
		return nil, fmt.Errorf("store: redis TLS: client key %s given without its certificate", o.Key)
	}
	return c, nil
}

// readable checks that a file can be read, so that an error says which of
// a certificate and its key is missing.
func readable(path, what string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: redis TLS: %s: %w", what, err)
	}
	return f.Close()
}

// InsecureTLS reports whether o talks TLS without verifying the servers
// (TLSOptions.Insecure, or skip_verify=true in a rediss:// URL): worth a
// warning when a process starts.
func InsecureTLS(o *redis.UniversalOptions) bool {
	return o != nil && o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify
}

// errTLSDropped guards against the bug this file fixed: a TLS URL whose
// options came out without a TLS configuration would talk in the clear.
var errTLSDropped = errors.New("store: internal error: a TLS redis url lost its TLS configuration")

// tlsHint says, for a failed connection, what a TLS setting may have to do
// with it (or "").
func tlsHint(err error, usingTLS bool) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var notTLS tls.RecordHeaderError
	var netErr net.Error
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		return " (the server's certificate is not signed by a CA this process trusts: name the CA with --redis-tls-ca)"
	case errors.As(err, &hostname):
		return " (the server's certificate does not name the host dialled: fix the certificate, or set --redis-tls-server-name to a name it carries)"
	case errors.As(err, &invalid):
		return " (the server's certificate is not valid: expired, not yet valid, or not for a server)"
	case errors.As(err, &notTLS):
		return " (the server does not speak TLS on this port)"
	case usingTLS && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout()):
		// A plaintext Redis reads a ClientHello as the start of an inline
		// command and waits for the rest: the handshake times out.
		return " (no TLS handshake completed in time: maybe the server does not speak TLS on this port)"
	case usingTLS && strings.Contains(msg, "tls: certificate required"):
		return " (the server requires a client certificate: --redis-tls-cert and --redis-tls-key)"
	case usingTLS && (strings.Contains(msg, "tls: bad certificate") || strings.Contains(msg, "tls: unknown certificate authority")):
		return " (the server refused the client certificate: it must be signed by a CA in the server's tls-ca-cert-file)"
	case !usingTLS && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return " (a server that speaks only TLS closes plaintext connections like this: if it does, use a rediss URL)"
	}
	return ""
}
