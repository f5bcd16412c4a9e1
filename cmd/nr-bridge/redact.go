package main

import (
	"net/url"
	"strings"
)

// redactURLs hides the user info of every URL in a comma-separated value:
// NATS_URL (nats://user:pass@host, nats://token@host) and MQTT_URL may carry
// credentials, and the configuration is logged at start.
func redactURLs(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			// An unparsable URL may still hold a password: drop what
			// precedes the last '@'.
			if at := strings.LastIndexByte(p, '@'); at >= 0 {
				parts[i] = "redacted" + p[at:]
			}
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
