package e2e

// Redis over TLS: a farm serves echoes, logins and triggers over every TLS
// form of --redis (rediss://, rediss-cluster://, rediss-sentinel://)
// against redis-servers that speak only TLS, with certificates the tests
// make (storetest.NewCerts) and client certificates required; and a TLS
// URL never talks plaintext, even to a plaintext cluster.

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/trigger"
)

// tlsOptions are the farm's TLS settings for servers with these
// certificates: their CA and the client certificate.
func tlsOptions(c *storetest.Certs) store.TLSOptions {
	return store.TLSOptions{CA: c.CA, Cert: c.ClientCert, Key: c.ClientKey}
}

// parseTLS is parseURL with TLS settings.
func parseTLS(t *testing.T, url string, o store.TLSOptions) *redis.UniversalOptions {
	t.Helper()
	ro, err := store.ParseURLTLS(url, o)
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

// farmServesOverTLS runs a gateway and a worker on ro: 20 clients x 20
// pipelined echoes, a login, a broadcast trigger reaching the client (the
// gateway's subscription) and a group push from a worker. It returns the
// farm's prefix.
func farmServesOverTLS(t *testing.T, ro *redis.UniversalOptions) string {
	t.Helper()
	f := newFarm(t, ro)
	gw := f.gateway(nil)
	f.worker(nil, nil)
	echoClients(t, gw.Addr().String(), 20, 20, 30*time.Second, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dial(t, gw)
	if r, err := c.Request(ctx, demo.CmdLogin, []byte("alice")); err != nil || r.Ret != 0 {
		t.Fatalf("login: %v %v", r.Ret, err)
	}
	if r, err := c.Request(ctx, demo.CmdJoin, []byte("lobby")); err != nil || r.Ret != 0 {
		t.Fatalf("join: %v %v", r.Ret, err)
	}
	pub := trigger.NewPublisher(testClient(t, ro), f.prefix)
	for {
		n, err := pub.Broadcast(ctx, 101, []byte("over TLS"))
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the gateway never subscribed to triggers")
		}
		time.Sleep(50 * time.Millisecond)
	}
	expectPush(t, c, 101, "over TLS")
	if _, err := pub.WriteToGroup(ctx, "lobby", 102, []byte("lobby news")); err != nil {
		t.Fatal(err)
	}
	expectPush(t, c, 102, "lobby news")
	return f.prefix
}

// TestTLSSingle: one redis-server speaking only TLS, client certificates
// required (tls-auth-clients yes): the farm serves over rediss://, and
// without the client certificate it cannot connect.
func TestTLSSingle(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{TLS: true, ClientAuth: "yes"})
	farmServesOverTLS(t, parseTLS(t, srv.URL(), tlsOptions(srv.Certs)))

	noCert := tlsOptions(srv.Certs)
	noCert.Cert, noCert.Key = "", ""
	_, err := store.ConnectTLS(context.Background(), srv.URL(), noCert, nil)
	if err == nil || !strings.Contains(err.Error(), "requires a client certificate") {
		t.Errorf("without a client certificate: %v", err)
	}
}

// TestTLSCluster: a 3-master cluster speaking only TLS (tls-cluster yes:
// the bus and the addresses CLUSTER SLOTS reports are TLS), client
// certificates required. The farm serves over rediss-cluster://, with its
// partitions on every master; the comma form rediss://a,b,c is a TLS
// cluster too.
func TestTLSCluster(t *testing.T) {
	start := time.Now()
	c := storetest.StartClusterOptions(t, 3, 0, storetest.Options{TLS: true, ClientAuth: "yes"})
	t.Logf("3-master TLS cluster up in %v", time.Since(start).Round(time.Millisecond))
	o := tlsOptions(c.Certs)
	ro := parseTLS(t, c.URL(), o)
	prefix := farmServesOverTLS(t, ro)
	checkQueuesOnEveryMaster(t, c, prefix) // the farm's connections reached every master

	comma := "rediss://" + strings.Join(c.Addrs, ",")
	rdb, err := store.ConnectTLS(context.Background(), comma, o, nil)
	if err != nil {
		t.Fatalf("%s: %v", comma, err)
	}
	defer rdb.Close()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("%s: a %T, want a cluster client", comma, rdb)
	}
	masters := 0
	var mu sync.Mutex
	err = cc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		masters++
		mu.Unlock()
		return m.Ping(ctx).Err()
	})
	if err != nil || masters != 3 {
		t.Errorf("%s: %d masters answered (%v), want 3", comma, masters, err)
	}
}

// TestTLSSentinel: a master, a replica and three Sentinels, all speaking
// only TLS, client certificates required: the farm finds the master
// through the Sentinels and serves over rediss-sentinel:// (TLS to the
// Sentinels and to the master alike), also after the master is killed
// and the replica promoted.
func TestTLSSentinel(t *testing.T) {
	start := time.Now()
	s := storetest.StartSentinelOptions(t, 1, storetest.Options{TLS: true, ClientAuth: "yes"})
	t.Logf("TLS Sentinel setup up in %v", time.Since(start).Round(time.Millisecond))
	ro := parseTLS(t, s.URL(), tlsOptions(s.Certs))
	farmServesOverTLS(t, ro)

	// A failover: the Sentinels agree over TLS (they have no plaintext
	// port), and the farm follows them to the new master over TLS.
	f := newFarm(t, ro)
	gw := f.gateway(nil)
	f.worker(nil, nil)
	echoClients(t, gw.Addr().String(), 10, 10, 30*time.Second, nil)
	old := s.KillMaster()
	killed := time.Now()
	m, err := s.WaitFailover(20*time.Second, old)
	if err != nil {
		t.Fatal(err)
	}
	echoClients(t, gw.Addr().String(), 10, 10, 30*time.Second, nil)
	t.Logf("master %s killed; %s promoted and the farm answering again %v later",
		old, m, time.Since(killed).Round(time.Millisecond))

	other := storetest.NewCerts(t)
	_, err = store.ConnectTLS(context.Background(), s.URL(), store.TLSOptions{CA: other.CA}, func(o *redis.UniversalOptions) {
		o.DialerRetries, o.MaxRetries = 1, -1
	})
	if err == nil || !strings.Contains(err.Error(), "not signed by a CA this process trusts") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Sentinels with a wrong CA: %v", err)
	}
}

// TestTLSURLNeverPlaintext: TLS URLs of a cluster, given a plaintext
// 3-master cluster (and, through the same seeds, the forms of one server
// and of Sentinel), fail with a clear error and never send a plaintext
// byte: every connection the client opens starts with a TLS handshake
// record, and the password of the URL never crosses the wire. (The farm
// used to drop TLS from rediss://h1:p,h2:p and log in in the clear.)
func TestTLSURLNeverPlaintext(t *testing.T) {
	c := storetest.StartCluster(t, 3, 0)
	certs := storetest.NewCerts(t)
	var seeds []string
	var recs []*recorder
	for _, a := range c.Addrs {
		r := startRecorder(t, a)
		recs = append(recs, r)
		seeds = append(seeds, r.addr)
	}
	const password = "s3cret-password"
	urls := []string{
		"rediss://:" + password + "@" + strings.Join(seeds, ","),
		"rediss-cluster://:" + password + "@" + strings.Join(seeds, ","),
		"rediss://:" + password + "@" + seeds[0] + "/0",
		"rediss-sentinel://:" + password + "@" + seeds[1] + "/mymaster?sentinel_password=" + password,
	}
	// A plaintext Redis reads the ClientHello as the start of an inline
	// command and waits for its end: the handshake times out.
	short := func(o *redis.UniversalOptions) {
		o.DialTimeout, o.DialerRetries, o.MaxRetries = 300*time.Millisecond, 1, -1
	}
	for _, u := range urls {
		_, err := store.ConnectTLS(context.Background(), u, store.TLSOptions{CA: certs.CA}, short)
		if err == nil {
			t.Errorf("%s: connected to a plaintext cluster", u)
			continue
		}
		if !strings.Contains(err.Error(), "does not speak TLS") || strings.Contains(err.Error(), password) {
			t.Errorf("%s: error %q, want one saying the server does not speak TLS, without the password", u, err)
		}
	}
	// The farm itself: a gateway on the TLS cluster URL keeps trying, in
	// TLS only.
	ro := parseTLS(t, urls[0], store.TLSOptions{CA: certs.CA})
	gw, err := gateway.New(gateway.Options{Listen: "127.0.0.1:0", Redis: ro, Prefix: storetest.Prefix(t), Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = gw.Run(ctx)

	conns := 0
	for _, r := range recs {
		for i, first := range r.received() {
			conns++
			if len(first) > 0 && first[0] != 0x16 { // a TLS handshake record
				t.Errorf("connection %d to %s began with %q, not a TLS handshake", i, r.target, first)
			}
			for _, plain := range []string{password, "HELLO", "AUTH", "PING", "CLUSTER"} {
				if bytes.Contains(bytes.ToUpper(first), bytes.ToUpper([]byte(plain))) {
					t.Errorf("connection %d to %s carried %q in the clear", i, r.target, plain)
				}
			}
		}
	}
	if conns == 0 {
		t.Fatal("no connection reached the cluster: the test proves nothing")
	}
	// The control: a plaintext URL through a recorder of its own shows
	// what the recorders would have caught (AUTH and the password).
	ctrl := startRecorder(t, c.Addrs[0])
	if rdb, err := store.Connect(context.Background(), "redis://:"+password+"@"+ctrl.addr+"/0", short); err == nil {
		rdb.Close()
	}
	if got := ctrl.received(); len(got) == 0 || !bytes.Contains(got[0], []byte(password)) {
		t.Errorf("the control's plaintext login was not recorded: %q", got)
	}
	t.Logf("%d connections to the plaintext cluster, every one a TLS handshake", conns)
}

// recorder forwards TCP connections to target and keeps what each client
// sent (its first 4 KiB).
type recorder struct {
	addr, target string
	mu           sync.Mutex
	conns        []*bytes.Buffer
	open         []net.Conn // closed when the test ends
}

func startRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{addr: l.Addr().String(), target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		r.mu.Lock()
		for _, cn := range r.open {
			cn.Close()
		}
		r.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			cn, err := l.Accept()
			if err != nil {
				return
			}
			buf := &bytes.Buffer{}
			r.mu.Lock()
			r.conns = append(r.conns, buf)
			r.open = append(r.open, cn)
			r.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.forward(cn, buf)
			}()
		}
	}()
	return r
}

func (r *recorder) forward(cn net.Conn, buf *bytes.Buffer) {
	defer cn.Close()
	up, err := net.DialTimeout("tcp", r.target, time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	r.mu.Lock()
	r.open = append(r.open, up)
	r.mu.Unlock()
	_ = cn.SetDeadline(time.Now().Add(10 * time.Second))
	_ = up.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.Copy(cn, up); cn.Close() }()
	b := make([]byte, 4096)
	for {
		n, err := cn.Read(b)
		if n > 0 {
			r.mu.Lock()
			if buf.Len() < 4096 {
				buf.Write(b[:min(n, 4096-buf.Len())])
			}
			r.mu.Unlock()
			if _, werr := up.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// received returns what each connection's client sent so far.
func (r *recorder) received() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(r.conns))
	for i, b := range r.conns {
		out[i] = append([]byte(nil), b.Bytes()...)
	}
	return out
}
