package natsstatus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestListNewestFirstPerOrg stores five commands of acme and two of
// other, one of acme with an ID that is not a plain key token: a listing
// of acme returns acme's only, newest accepted first, cut at the limit.
func TestListNewestFirstPerOrg(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	nc, js := testclient.ConnectNATS(t, ns.URL())
	defer nc.Close()
	ctx := context.Background()
	st, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.List(ctx, "acme", 10); err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %d statuses, %v; want 0, nil", len(got), err)
	}
	base := time.Now().UTC().Add(-time.Minute)
	put := func(org, id string, i int) {
		s := status(id)
		s.Org, s.AcceptedAt = org, base.Add(time.Duration(i)*time.Second)
		if _, err := st.Put(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	ids := []string{"c0", "c1", "c 2/é", "c3", "c4"}
	for i, id := range ids {
		put("acme", id, i)
	}
	put("other", "o1", 10)
	put("other", "o2", 11)

	got, err := st.List(ctx, "acme", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"c4", "c3", "c 2/é"}; fmt.Sprint(ids3(got)) != fmt.Sprint(want) {
		t.Errorf("acme limit 3: %q, want %q", ids3(got), want)
	}
	for _, s := range got {
		if s.Org != "acme" {
			t.Errorf("listing of acme holds a status of %q", s.Org)
		}
	}
	if got, _ := st.List(ctx, "acme", 100); len(got) != 5 {
		t.Errorf("acme limit 100: %d statuses, want 5", len(got))
	}
	if got, _ := st.List(ctx, "other", 100); fmt.Sprint(ids3(got)) != "[o2 o1]" {
		t.Errorf("other: %q, want [o2 o1]", ids3(got))
	}
	if _, err := st.List(ctx, "a.b", 10); !errors.Is(err, bridge.ErrInvalidID) {
		t.Errorf("org a.b: %v, want ErrInvalidID", err)
	}
}

func ids3(sts []*bridge.CommandStatus) []string {
	out := make([]string, len(sts))
	for i, s := range sts {
		out[i] = s.CorrelationID
	}
	return out
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
