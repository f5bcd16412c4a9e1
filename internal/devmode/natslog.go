package devmode

import (
	"context"
	"fmt"
	"log/slog"
)

// natsLogger routes nats-server's printf-style log calls to slog. It
// implements server.Logger. Fatalf does not exit the process (nats-server's
// own logger would): it logs at Error and hands the message to startNATS,
// which reports it as the start error.
type natsLogger struct {
	log   *slog.Logger
	fatal chan string // capacity 1: the first fatal message
}

func newNATSLogger(log *slog.Logger) *natsLogger {
	return &natsLogger{log: log, fatal: make(chan string, 1)}
}

func (l *natsLogger) logf(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// Noticef logs at Info.
func (l *natsLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }

// Warnf logs at Warn.
func (l *natsLogger) Warnf(format string, v ...any) { l.logf(slog.LevelWarn, format, v) }

// Errorf logs at Error.
func (l *natsLogger) Errorf(format string, v ...any) { l.logf(slog.LevelError, format, v) }

// Debugf logs at Debug; nats-server calls it only when LOG_LEVEL=debug.
func (l *natsLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Tracef logs at Debug; tracing is never turned on.
func (l *natsLogger) Tracef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Fatalf logs at Error and reports the message to the starter.
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
