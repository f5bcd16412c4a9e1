package natsconn_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// startAuthServer starts an in-process nats-server (no JetStream) with the
// authentication set up by configure and returns its client URL. The
// shared testserver has no NKey or operator mode, and these tests only
// need the handshake and a round trip.
func startAuthServer(t *testing.T, configure func(*server.Options)) string {
	t.Helper()
	so := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true}
	configure(so)
	s, err := server.NewServer(so)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatal("nats-server not ready for connections after 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// newUserSeedFile writes a fresh NKey user seed to a 0600 file and returns
// the key pair and the file's path.
func newUserSeedFile(t *testing.T, name string) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return kp, path
}

func publicKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// assertRefused waits for three failed attempts and checks each names the
// server's authorization violation, that the connection keeps retrying
// (RECONNECTING, not CLOSED), that LastError says it, and that no seed is
// in the log.
func assertRefused(t *testing.T, cfg natsconn.Config, secrets ...string) {
	t.Helper()
	log, logs := newLog()
	nc := connect(t, cfg, log)
	testserver.WaitFor(t, 15*time.Second, "three failed attempts logged", func() bool {
		return len(logs.records("NATS connection attempt failed")) >= 3
	})
	for _, r := range logs.records("NATS connection attempt failed") {
		if msg, _ := r["err"].(string); !strings.Contains(strings.ToLower(msg), "authorization violation") {
			t.Errorf("attempt logged with err %q, want the authorization violation", msg)
		}
	}
	if nc.IsConnected() || nc.IsClosed() {
		t.Fatalf("status %s, want RECONNECTING (retrying)", nc.Status())
	}
	if err := nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("LastError = %v, want the authorization violation", err)
	}
	for _, s := range secrets {
		if strings.Contains(logs.buf.String(), s) {
			t.Errorf("the log contains a seed")
		}
	}
}

// NATS_NKEY_FILE logs in to a server that knows the user's public NKey;
// another user's seed is refused with the server's authorization
// violation, retried, and never logged.
func TestConnectNKey(t *testing.T) {
	good, goodFile := newUserSeedFile(t, "good.nk")
	url := startAuthServer(t, func(so *server.Options) {
		so.Nkeys = []*server.NkeyUser{{Nkey: publicKey(t, good)}}
	})

	t.Run("known key", func(t *testing.T) {
		log, logs := newLog()
		nc := connect(t, natsconn.Config{URL: url, NKeyFile: goodFile}, log)
		testserver.WaitFor(t, 10*time.Second, "NATS connected with an NKey", nc.IsConnected)
		roundTrip(t, nc)
		if n := len(logs.records("NATS connection attempt failed")); n != 0 {
			t.Fatalf("%d failed attempts logged, want 0", n)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		other, otherFile := newUserSeedFile(t, "other.nk")
		seed, _ := other.Seed()
		assertRefused(t, natsconn.Config{URL: url, NKeyFile: otherFile}, string(seed))
	})
}

// NATS_CREDS_FILE logs in to a server in operator mode (operator JWT
// trusted, account JWT in a memory resolver) with a user JWT signed by that
// account; a creds file whose user is signed by an account the server does
// not know is refused with the authorization violation.
func TestConnectCredsFile(t *testing.T) {
	operator, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	oc := jwt.NewOperatorClaims(publicKey(t, operator))
	oc.Name = "test-operator"
	ojwt, err := oc.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	newAccount := func(name string) (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		ac := jwt.NewAccountClaims(publicKey(t, kp))
		ac.Name = name
		enc, err := ac.Encode(operator)
		if err != nil {
			t.Fatal(err)
		}
		return kp, enc
	}
	account, accountJWT := newAccount("bridge")
	sysAccount, sysJWT := newAccount("SYS")
	stranger, _ := newAccount("unknown") // signed by the operator, never given to the server

	resolver := &server.MemAccResolver{}
	if err := resolver.Store(publicKey(t, account), accountJWT); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(publicKey(t, sysAccount), sysJWT); err != nil {
		t.Fatal(err)
	}
	url := startAuthServer(t, func(so *server.Options) {
		so.TrustedOperators = []*jwt.OperatorClaims{trusted}
		so.AccountResolver = resolver
		so.SystemAccount = publicKey(t, sysAccount)
	})

	// credsFile writes a creds file for a new user signed by acct.
	credsFile := func(acct nkeys.KeyPair, name string) (string, string) {
		user, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		uc := jwt.NewUserClaims(publicKey(t, user))
		uc.Name = name
		ujwt, err := uc.Encode(acct)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := user.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path, string(seed)
	}

	t.Run("user of a known account", func(t *testing.T) {
		path, _ := credsFile(account, "bridge")
		log, logs := newLog()
		nc := connect(t, natsconn.Config{URL: url, CredsFile: path}, log)
		testserver.WaitFor(t, 10*time.Second, "NATS connected with a creds file", nc.IsConnected)
		roundTrip(t, nc)
		if n := len(logs.records("NATS connection attempt failed")); n != 0 {
			t.Fatalf("%d failed attempts logged, want 0", n)
		}
	})
	t.Run("user of an unknown account", func(t *testing.T) {
		path, seed := credsFile(stranger, "stranger")
		assertRefused(t, natsconn.Config{URL: url, CredsFile: path}, seed)
	})
}
