package kafkaconn

import (
	"log/slog"

	"github.com/nr-bridge/nr-bridge/internal/tlsfiles"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Options returns the franz-go options every bridge client shares: seed
// brokers, client ID, TLS, SASL, the largest batch it produces and a logger
// that sends franz-go's logs through log (pass it scoped to the component
// that owns the client, e.g. component=sink). The sink and
// the source add their own producer or consumer options. It fails when a
// TLS file cannot be loaded; the error names the variable.
//
// Producer settings are deliberately franz-go's defaults: acks=all,
// idempotent writes (so retries inside the client never duplicate or
// reorder a partition's records), unbounded retries, and keyed records
// partitioned with murmur2 like the Java client.
func Options(cfg Config, log *slog.Logger) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.BrokerList()...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithLogger(kslog.New(log)),
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxMessageBytes)),
	}
	if cfg.UseTLS() {
		tlsCfg, err := tlsfiles.Client("KAFKA", cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		// franz-go sets ServerName from the broker address it dials, so
		// every broker's certificate is checked against its own name.
		opts = append(opts, kgo.DialTLSConfig(tlsCfg))
	}
	switch cfg.SASLMechanism {
	case SASLPlain:
		if !cfg.UseTLS() {
			log.Warn("KAFKA_SASL_MECHANISM=PLAIN without TLS sends the password in clear text")
		}
		opts = append(opts, kgo.SASL(plain.Auth{User: cfg.SASLUsername, Pass: cfg.SASLPassword}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASLUsername, Pass: cfg.SASLPassword}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASLUsername, Pass: cfg.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}
