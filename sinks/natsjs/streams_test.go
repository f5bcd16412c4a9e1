package natsjs_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

func config() natsjs.Config {
	return natsjs.Config{Streams: natsconn.Streams{SubjectPrefix: "nr", DLQStream: "NR_DLQ", ManageStreams: true, Replicas: 1, MaxAge: time.Hour, DuplicateWindow: time.Minute}, EventsStream: "NR_EVENTS", RepliesStream: "NR_REPLIES", PublishWindow: 64, AckTimeout: time.Second}
}

func TestConflictingStreamIsUsedWithWarning(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NR_EVENTS", Subjects: []string{"nr.org.*.node.*.events"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, "t", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sink, err := bridgetest.StartNATSSink(ctx, nc, config(), log, nil)
	if err != nil {
		t.Fatalf("New with a conflicting stream: %v", err)
	}
	defer sink.Close(ctx)
	if !strings.Contains(logs.String(), "stream exists with settings the bridge cannot apply") || !strings.Contains(logs.String(), "stream=NR_EVENTS") {
		t.Fatalf("no warning naming the stream in:\n%s", logs.String())
	}
	s, err := js.Stream(ctx, "NR_EVENTS")
	if err != nil || s.CachedInfo().Config.Storage != jetstream.MemoryStorage {
		t.Fatalf("stream changed: %v", err)
	}
}

func TestUnmanagedMissingStreamFails(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, "t", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := config()
	cfg.ManageStreams = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = bridgetest.StartNATSSink(ctx, nc, cfg, log, nil)
	if err == nil || !strings.Contains(err.Error(), "stream NR_EVENTS not found and NATS_MANAGE_STREAMS=false") {
		t.Fatalf("err = %v", err)
	}
}
