package publisher

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestMQTTURLCredentials(t *testing.T) {
	t.Run("both in URL and variables", func(t *testing.T) {
		cfg := pubConfig("tcp://u:url-secret@127.0.0.1:1883", "both")
		cfg.Username = "u"
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "set the credentials in one place") || strings.Contains(err.Error(), "url-secret") {
			t.Fatalf("Validate = %v, want a refusal that does not show the password", err)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		cfg := pubConfig("tcp://u:url-secret@127.0.0.1:notaport", "bad")
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "tcp://redacted@127.0.0.1:notaport") {
			t.Fatalf("Validate = %v, want the redacted URL", err)
		}
	})
	// The user info of MQTT_URL is sent in CONNECT, and the URL autopaho
	// prints in its errors has none.
	t.Run("sent in CONNECT", func(t *testing.T) {
		broker := startBrokerWithPassword(t, "bridge", "right-pw")
		cc, err := pubConfig("tcp://bridge:wrong-pw@"+broker.Addr(), "x").ClientConfig("x", 1, pubLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if cc.ServerUrls[0].User != nil || cc.ConnectUsername != "bridge" || string(cc.ConnectPassword) != "wrong-pw" {
			t.Fatalf("server URL %s, CONNECT user %q password %q", cc.ServerUrls[0], cc.ConnectUsername, cc.ConnectPassword)
		}
		p := startPublisher(t, pubConfig("tcp://bridge:right-pw@"+broker.Addr(), "url-creds"))
		if err := p.Ready(); err != nil {
			t.Fatal(err)
		}
	})
}

// startBrokerWithPassword starts Mosquitto refusing anonymous clients, with
// one user.
func startBrokerWithPassword(t *testing.T, user, password string) *testserver.Mosquitto {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwFile, user, password).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	return testserver.StartMosquitto(t, testserver.MosquittoOptions{ExtraConfig: []string{"allow_anonymous false", "password_file " + pwFile}})
}
