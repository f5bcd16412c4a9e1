//go:build faults

package faults

import (
	"flag"
	"os"
	"testing"
	"time"
)

// outage is how long every fault lasts (the 10 s).
const outage = 10 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	start := time.Now()
	code := m.Run()
	printSummary(time.Since(start))
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
