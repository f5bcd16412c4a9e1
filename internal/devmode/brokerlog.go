package devmode

import (
	"context"
	"log/slog"
)

// brokerLogHandler passes mochi's records on, giving a message to the ones
// it logs without (a client connection that ended with an error, such as
// every client still connected when the broker stops), so that no log line
// has an empty msg.
type brokerLogHandler struct {
	slog.Handler
}

// Handle fills an empty message.
func (h brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		nr := slog.NewRecord(r.Time, r.Level, "MQTT client connection ended with an error", r.PC)
		r.Attrs(func(a slog.Attr) bool {
			nr.AddAttrs(a)
			return true
		})
		r = nr
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs keeps the wrapper around the derived handler.
func (h brokerLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return brokerLogHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper around the derived handler.
func (h brokerLogHandler) WithGroup(name string) slog.Handler {
	return brokerLogHandler{h.Handler.WithGroup(name)}
}
