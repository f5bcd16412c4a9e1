package bridge

import (
	"errors"
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"letters digits", "Org_1-a", true},
		{"one char", "a", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"plus wildcard", "a+b", false},
		{"hash wildcard", "a#", false},
		{"slash", "a/b", false},
		{"dot", "a.b", false},
		{"nul", "a\x00b", false},
		{"dollar", "$SYS", false},
		{"space", "a b", false},
		{"star", "a*", false},
		{"gt", "a>", false},
		{"unicode", "nöde", false},
		{"newline", "a\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidID(tt.id); got != tt.want {
				t.Fatalf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestParseNodeTopic(t *testing.T) {
	tests := []struct {
		name      string
		topic     string
		want      NodeTopic
		wantErr   error // nil: no error; ErrInvalidID: that; errAny: some other error
		wantSubj  string
		wantKey   string
		anyErrors bool
	}{
		{name: "event", topic: "org/o1/node/n1/events", want: NodeTopic{"o1", "n1", KindEvents}, wantSubj: "nr.org.o1.node.n1.events", wantKey: "org/o1/node/n1"},
		{name: "reply", topic: "org/o-1/node/n_1/reply", want: NodeTopic{"o-1", "n_1", KindReply}, wantSubj: "nr.org.o-1.node.n_1.reply", wantKey: "org/o-1/node/n_1"},
		{name: "dot in org", topic: "org/bad.org/node/n1/events", want: NodeTopic{"bad.org", "n1", KindEvents}, wantErr: ErrInvalidID},
		{name: "dollar node", topic: "org/o1/node/$x/reply", want: NodeTopic{"o1", "$x", KindReply}, wantErr: ErrInvalidID},
		{name: "empty node", topic: "org/o1/node//events", want: NodeTopic{"o1", "", KindEvents}, wantErr: ErrInvalidID},
		{name: "long org", topic: "org/" + strings.Repeat("x", 65) + "/node/n/events", want: NodeTopic{strings.Repeat("x", 65), "n", KindEvents}, wantErr: ErrInvalidID},
		{name: "unknown kind", topic: "org/o1/node/n1/cmd", anyErrors: true},
		{name: "no org prefix", topic: "x/o1/node/n1/events", anyErrors: true},
		{name: "no node level", topic: "org/o1/events", anyErrors: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNodeTopic(tt.topic)
			if tt.anyErrors {
				if err == nil || errors.Is(err, ErrInvalidID) {
					t.Fatalf("ParseNodeTopic(%q) err = %v, want a grammar error", tt.topic, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ParseNodeTopic(%q) err = %v, want %v", tt.topic, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseNodeTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
			}
			if err == nil {
				if s := got.Subject("nr"); s != tt.wantSubj {
					t.Errorf("Subject = %q, want %q", s, tt.wantSubj)
				}
				if k := got.Key(); k != tt.wantKey {
					t.Errorf("Key = %q, want %q", k, tt.wantKey)
				}
			}
		})
	}
}

func TestSubscriptionFilters(t *testing.T) {
	got := SubscriptionFilters("nr-listeners", "")
	want := []string{"$share/nr-listeners/org/+/node/+/events", "$share/nr-listeners/org/+/node/+/reply"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("filters = %v, want %v", got, want)
	}
	got = SubscriptionFilters("g", "acme")
	want = []string{"$share/g/org/acme/node/+/events", "$share/g/org/acme/node/+/reply"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("filters with ORG_ID = %v, want %v", got, want)
	}
	if s := DeadLetterSubject("nr", "events"); s != "nr.dlq.events" {
		t.Fatalf("DeadLetterSubject = %q", s)
	}
}

func FuzzParseNodeTopic(f *testing.F) {
	for _, s := range []string{"org/o1/node/n1/events", "org/a.b/node/n/reply", "org//node//events", "org/o/node/n/x/events", "org/\x00/node/+/reply"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		nt, err := ParseNodeTopic(topic)
		if err != nil {
			return
		}
		if !ValidID(nt.Org) || !ValidID(nt.Node) || (nt.Kind != KindEvents && nt.Kind != KindReply) {
			t.Fatalf("accepted %q as %+v", topic, nt)
		}
		if got := "org/" + nt.Org + "/node/" + nt.Node + "/" + string(nt.Kind); got != topic {
			t.Fatalf("round trip %q -> %q", topic, got)
		}
		if strings.ContainsAny(nt.Subject("nr"), "*> \x00/") {
			t.Fatalf("subject %q has a wildcard or separator", nt.Subject("nr"))
		}
	})
}
