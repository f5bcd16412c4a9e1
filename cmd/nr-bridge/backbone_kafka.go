package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
)

// kafkaBackbone is Kafka: the sink and the commands source each own a
// franz-go client (a producer, and a group consumer that also produces its
// dead letters).
type kafkaBackbone struct {
	sink     *kafkasink.Sink
	commands *kafkasource.Source // nil until StartCommands
	status   *kafkastatus.Store  // its own client, reading every partition
	cfg      *Config
	log      *slog.Logger
}

// openKafka connects the sink, waiting while the cluster is unreachable,
// and creates the missing topics (KAFKA_CREATE_TOPICS).
func openKafka(ctx context.Context, cfg *Config, log *slog.Logger) (*kafkaBackbone, error) {
	sink, err := kafkasink.New(cfg.Kafka, cfg.KafkaSink, log)
	if err != nil {
		return nil, err
	}
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	status, err := kafkastatus.New(cfg.Kafka, cfg.KafkaStatus, cfg.Tracking.Retention(cfg.CommandLimits.MaxTTL), log)
	if err != nil {
		return nil, errors.Join(err, sink.Close(ctx))
	}
	if err := status.Start(ctx); err != nil {
		return nil, errors.Join(err, status.Close(ctx), sink.Close(ctx))
	}
	return &kafkaBackbone{sink: sink, status: status, cfg: cfg, log: log}, nil
}

// StatusStore is the nr.command-status topic and this replica's view of it.
func (b *kafkaBackbone) StatusStore() bridge.StatusStore { return b.status }

func (b *kafkaBackbone) Sink() bridge.Sink { return b.sink }

func (b *kafkaBackbone) Ready() error { return b.sink.Ready() }

// StartCommands joins consumer group KAFKA_GROUP on KAFKA_COMMANDS_TOPIC.
func (b *kafkaBackbone) StartCommands(ctx context.Context, in *bridge.Intake, instanceID string) error {
	src, err := kafkasource.New(b.cfg.Kafka, b.cfg.KafkaCommands, in, instanceID, b.log)
	if err != nil {
		return err
	}
	if err := src.Start(ctx); err != nil {
		_ = src.Close(ctx)
		return err
	}
	b.commands = src
	return nil
}

func (b *kafkaBackbone) StopCommands(ctx context.Context) error {
	if b.commands == nil {
		return nil
	}
	return b.commands.Close(ctx)
}

func (b *kafkaBackbone) Close(ctx context.Context) error {
	return errors.Join(b.sink.Close(ctx), b.status.Close(ctx))
}
