//go:build faults

package faults

import (
	"flag"
	"fmt"
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
	total := time.Since(start)
	printSummary(total)
	if path, err := writeResults(start, total, code == 0); err != nil {
		fmt.Fprintf(os.Stderr, "faults: %v\n", err)
		code = 1
	} else if path != "" {
		fmt.Printf("faults: results written to %s\n", path)
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
