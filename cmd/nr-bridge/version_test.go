package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionFrom(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		want    string
	}{
		{"ldflags stamp wins", "1.4.0", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}}, "1.4.0"},
		{"no build info", "", nil, "dev"},
		{"go install at a tag", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}}, "v1.3.0"},
		{"go build in a clone (Go 1.24+ pseudo-version)", "",
			&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203094434-67413d36fc79+dirty"}, Settings: vcs("67413d36fc7933c33b4d93a9927e2f9bbfe2c2fb", "true")},
			"v0.0.0-20261203094434-67413d36fc79+dirty"},
		{"devel with clean revision", "",
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("67413d36fc7933c33b4d93a9927e2f9bbfe2c2fb", "false")},
			"dev-67413d36fc79"},
		{"devel with modified tree", "",
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("67413d36fc7933c33b4d93a9927e2f9bbfe2c2fb", "true")},
			"dev-67413d36fc79+dirty"},
		{"devel without VCS information (go run, -buildvcs=false)", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionFrom(tt.stamped, tt.bi); got != tt.want {
				t.Fatalf("versionFrom = %q, want %q", got, tt.want)
			}
		})
	}
}
