package main

import "runtime/debug"

// buildVersion is stamped at build time with -ldflags "-X main.buildVersion=...".
var buildVersion = ""

// version is what -version, -h, the start log line and the
// nr_bridge_build_info metric report: the stamped buildVersion; else the
// module version of a `go install ...@version` build; else the VCS revision
// Go recorded for a build in a git checkout (12 hex digits, "+dirty" when
// the work tree had changes); else "dev" (`go run`, which records no VCS
// information, or a build outside a checkout).
func version() string {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(buildVersion, bi)
}

// versionFrom is version for a given stamp and build info (nil: none).
func versionFrom(stamped string, bi *debug.BuildInfo) string {
	if stamped != "" {
		return stamped
	}
	if bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+dirty"
	}
	return "dev-" + rev
}
