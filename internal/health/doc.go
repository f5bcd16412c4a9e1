// Package health is how the backbones know they are healthy and mend
// themselves: Writes tracks whether a sink's writes succeed, so readiness
// and the backbone gauge report a backbone that answers pings but refuses
// every write (a cluster that lost its topics, a deleted stream) instead
// of calling it healthy; Poller keeps the answer of a readiness check
// fresh off the request path; Repairer recreates what was lost off the
// write path. Each goroutine here is started by its owner's Start and
// stopped by its Close.
package health
