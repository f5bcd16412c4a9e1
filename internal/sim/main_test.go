package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine Run starts must be gone when it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
