package kafkaconn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func parse(t *testing.T, environ map[string]string) (kafkaconn.Config, error) {
	t.Helper()
	var cfg kafkaconn.Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parse(t, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := kafkaconn.Config{
		Brokers: "localhost:9092", ClientID: "nr-bridge",
		EventsTopic: "nr.events", RepliesTopic: "nr.replies", CommandsTopic: "nr.commands", DLQTopic: "nr.dlq",
		CreateTopics: true, TopicPartitions: 6, ReplicationFactor: -1, MaxMessageBytes: 1000000,
	}
	if cfg != want {
		t.Fatalf("defaults\n got %+v\nwant %+v", cfg, want)
	}
	if got := cfg.Topics(); strings.Join(got, ",") != "nr.events,nr.replies,nr.commands,nr.dlq" {
		t.Fatalf("Topics() = %v", got)
	}
	cfg.Brokers = " a:1, b:2 ,,"
	if got := cfg.BrokerList(); strings.Join(got, ",") != "a:1,b:2" {
		t.Fatalf("BrokerList() = %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		environ map[string]string
		wantErr string // a substring; "" = valid
	}{
		{"several brokers", map[string]string{"KAFKA_BROKERS": "k1:9092,k2:9093"}, ""},
		{"no brokers", map[string]string{"KAFKA_BROKERS": " , "}, "KAFKA_BROKERS"},
		{"broker with scheme", map[string]string{"KAFKA_BROKERS": "kafka://k1:9092"}, "KAFKA_BROKERS"},
		{"broker without port", map[string]string{"KAFKA_BROKERS": "k1"}, "KAFKA_BROKERS"},
		{"empty client id", map[string]string{"KAFKA_CLIENT_ID": ""}, ""}, // empty means the default
		{"cert without key", map[string]string{"KAFKA_CERT_FILE": "c.pem"}, "KAFKA_CERT_FILE and KAFKA_KEY_FILE"},
		{"scram", map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, ""},
		{"plain without password", map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD"},
		{"unknown mechanism", map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_MECHANISM"},
		{"username without mechanism", map[string]string{"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_MECHANISM"},
		{"bad topic name", map[string]string{"KAFKA_EVENTS_TOPIC": "nr/events"}, "KAFKA_EVENTS_TOPIC"},
		{"topic ..", map[string]string{"KAFKA_DLQ_TOPIC": ".."}, "KAFKA_DLQ_TOPIC"},
		{"commands read from the dlq", map[string]string{"KAFKA_COMMANDS_TOPIC": "nr.dlq"}, "KAFKA_COMMANDS_TOPIC and KAFKA_DLQ_TOPIC"},
		{"events and replies shared", map[string]string{"KAFKA_REPLIES_TOPIC": "nr.events"}, ""},
		{"empty group", map[string]string{"KAFKA_GROUP": ""}, ""},
		{"partitions broker default", map[string]string{"KAFKA_TOPIC_PARTITIONS": "-1"}, ""},
		{"zero partitions", map[string]string{"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS"},
		{"replication 3", map[string]string{"KAFKA_REPLICATION_FACTOR": "3"}, ""},
		{"replication 0", map[string]string{"KAFKA_REPLICATION_FACTOR": "0"}, "KAFKA_REPLICATION_FACTOR"},
		{"max message bytes tiny", map[string]string{"KAFKA_MAX_MESSAGE_BYTES": "1000"}, "KAFKA_MAX_MESSAGE_BYTES"},
		{"partitions not a number", map[string]string{"KAFKA_TOPIC_PARTITIONS": "six"}, "TopicPartitions"}, // cmd maps the field to the variable
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.environ)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

func client(t *testing.T, cfg kafkaconn.Config) *kgo.Client {
	t.Helper()
	opts, err := kafkaconn.Options(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func config(t *testing.T, k *testserver.Kafka, extra map[string]string) kafkaconn.Config {
	t.Helper()
	environ := map[string]string{"KAFKA_BROKERS": strings.Join(k.Brokers(), ",")}
	for key, v := range extra {
		environ[key] = v
	}
	cfg, err := parse(t, environ)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestEnsureTopics(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{SeedTopics: []string{"nr.events"}, Partitions: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg := config(t, k, map[string]string{"KAFKA_TOPIC_PARTITIONS": "4"})
	if err := kafkaconn.WaitReachable(ctx, client(t, cfg), testLogger()); err != nil {
		t.Fatal(err)
	}
	// A new client for each step: franz-go caches topic metadata for a
	// few seconds, and the bridge calls EnsureTopics once per client.
	adm := func() *kadm.Client { return kadm.NewClient(client(t, cfg)) }

	noCreate := cfg
	noCreate.CreateTopics = false
	err := kafkaconn.EnsureTopics(ctx, adm(), noCreate)
	if err == nil || !strings.Contains(err.Error(), "nr.replies, nr.commands, nr.dlq do not exist") || !strings.Contains(err.Error(), "KAFKA_CREATE_TOPICS") {
		t.Fatalf("without KAFKA_CREATE_TOPICS: %v, want an error naming the three missing topics", err)
	}

	refused := cfg
	refused.ReplicationFactor = 3 // one broker
	err = kafkaconn.EnsureTopics(ctx, adm(), refused)
	if err == nil || !errors.Is(err, kerr.InvalidReplicationFactor) || !strings.Contains(err.Error(), "create topic nr.replies") {
		t.Fatalf("replication factor 3 on one broker: %v, want INVALID_REPLICATION_FACTOR naming the topic", err)
	}

	for i := 0; i < 2; i++ { // the second run finds everything in place
		if err := kafkaconn.EnsureTopics(ctx, adm(), cfg); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	details, err := adm().ListTopics(ctx, cfg.Topics()...)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"nr.events": 2, "nr.replies": 4, "nr.commands": 4, "nr.dlq": 4}
	for topic, n := range want {
		d, ok := details[topic]
		if !ok || d.Err != nil || len(d.Partitions) != n {
			t.Errorf("topic %s: %+v, want %d partitions", topic, d, n)
		}
	}
	if err := kafkaconn.EnsureTopics(ctx, adm(), noCreate); err != nil {
		t.Fatalf("without KAFKA_CREATE_TOPICS once they exist: %v", err)
	}
}

func TestLimits(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := config(t, k, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": "100000"})
	adm := kadm.NewClient(client(t, cfg))
	small := "20000"
	if _, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"max.message.bytes": &small}, "small"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, "default"); err != nil {
		t.Fatal(err)
	}
	l := kafkaconn.NewLimits(cfg)
	if got := l.MaxBytes("small"); got != 100000 {
		t.Fatalf("before Load: %d, want KAFKA_MAX_MESSAGE_BYTES", got)
	}
	if err := l.Load(ctx, adm, "small", "default"); err != nil {
		t.Fatal(err)
	}
	if got := l.MaxBytes("small"); got != 20000 {
		t.Errorf("small: %d, want the topic's 20000", got)
	}
	if got := l.MaxBytes("default"); got != 100000 {
		t.Errorf("default: %d, want KAFKA_MAX_MESSAGE_BYTES (smaller than the broker's 1 MiB)", got)
	}
	if got := l.MaxDeadLetterValue("small", 1000); got != 20000-5000-1000 { // margin: a quarter of a small limit
		t.Errorf("MaxDeadLetterValue: %d", got)
	}
	if err := l.Load(ctx, adm, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Load of a missing topic: %v, want an error naming it", err)
	}
}

func TestTLSAndSASL(t *testing.T) {
	ca := testserver.NewCA(t)
	srv := ca.ServerTLS(t, false)
	pair, err := tls.LoadX509KeyPair(srv.CertFile, srv.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	k := testserver.StartKafka(t, testserver.KafkaOptions{Extra: []kfake.Opt{
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "bridge", "s3cret"),
		kfake.Superuser("PLAIN", "plainuser", "pw"),
	}})

	tests := []struct {
		name    string
		environ map[string]string
		wantOK  bool
		refused bool // WaitReachable must not wait
	}{
		{"scram-sha-512", map[string]string{"KAFKA_CA_FILE": ca.CertFile(), "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "bridge", "KAFKA_SASL_PASSWORD": "s3cret"}, true, false},
		{"plain", map[string]string{"KAFKA_CA_FILE": ca.CertFile(), "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "plainuser", "KAFKA_SASL_PASSWORD": "pw"}, true, false},
		{"wrong password", map[string]string{"KAFKA_CA_FILE": ca.CertFile(), "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "bridge", "KAFKA_SASL_PASSWORD": "nope"}, false, false}, // kfake drops the connection instead of answering SASL_AUTHENTICATION_FAILED, so this looks like an outage
		{"untrusted CA (system roots)", map[string]string{"KAFKA_TLS": "true", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "bridge", "KAFKA_SASL_PASSWORD": "s3cret"}, false, true},
		{"no TLS", map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "bridge", "KAFKA_SASL_PASSWORD": "s3cret"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := client(t, config(t, k, tt.environ))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := cl.Ping(ctx)
			if tt.wantOK != (err == nil) {
				t.Fatalf("ping: %v, want ok=%v", err, tt.wantOK)
			}
			if tt.refused {
				// WaitReachable gives up at once instead of waiting for
				// the context.
				wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer wcancel()
				if err := kafkaconn.WaitReachable(wctx, cl, testLogger()); err == nil || wctx.Err() != nil {
					t.Fatalf("WaitReachable: %v (ctx %v), want an immediate refusal", err, wctx.Err())
				}
			}
		})
	}

	if _, err := kafkaconn.Options(config(t, k, map[string]string{"KAFKA_CA_FILE": "/nonexistent.pem"}), testLogger()); err == nil || !strings.Contains(err.Error(), "KAFKA_CA_FILE") {
		t.Fatalf("missing CA file: %v, want an error naming KAFKA_CA_FILE", err)
	}
}

func TestMonitor(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	cl := client(t, config(t, k, nil))
	m := kafkaconn.NewMonitor(cl, testLogger())
	m.Start()
	defer m.Close()
	testserver.WaitFor(t, 10*time.Second, "monitor ready", func() bool { return m.Ready() == nil })
	k.Close()
	testserver.WaitFor(t, 20*time.Second, "monitor not ready", func() bool { return m.Ready() != nil })
	k.Restart()
	testserver.WaitFor(t, 20*time.Second, "monitor ready again", func() bool { return m.Ready() == nil })
}
