package api_test

import (
	"context"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/dlqtail"
)

// noStore is the console's backbone before it is open: every read
// answers bridge.ErrStatusUnavailable (what cmd/nr-bridge's console
// adapter answers until the backbone connected).
type noStore struct{}

func (noStore) List(context.Context, string, int) ([]*bridge.CommandStatus, error) {
	return nil, bridge.ErrStatusUnavailable
}

func (noStore) Watch(context.Context, string, string) (<-chan *bridge.CommandStatus, error) {
	return nil, bridge.ErrStatusUnavailable
}

func (noStore) Recent(context.Context, string, int) ([]dlqtail.Entry, error) {
	return nil, bridge.ErrStatusUnavailable
}
