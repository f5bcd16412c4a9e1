package devmode

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// ErrAddrInUse means another process (often a broker or an earlier
// nr-bridge -dev) already listens on an address dev mode needs. The error
// wrapping it names the variable to change.
var ErrAddrInUse = errors.New("address already in use")

// CheckFree listens on addr and closes the listener at once, so a busy port
// is reported before any server starts, with the variable that sets it
// (MQTT_URL, NATS_URL, HTTP_ADDR) and a suggestion. Another process can
// still take the port in between; the server's own listen error covers that.
func CheckFree(addr, variable string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s: %s: %w (another server, or an earlier nr-bridge -dev, listens there): stop it or set %s to a free address, e.g. %s",
				variable, addr, ErrAddrInUse, variable, suggestion(addr, variable))
		}
		return fmt.Errorf("%s: cannot listen on %s: %w", variable, addr, err)
	}
	return ln.Close()
}

// suggestion is addr with the port plus one, written the way variable
// takes it.
func suggestion(addr, variable string) string {
	host, port, err := net.SplitHostPort(addr)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p >= 65535 {
		return "a different port"
	}
	next := net.JoinHostPort(host, strconv.Itoa(p+1))
	switch variable {
	case "MQTT_URL":
		return "tcp://" + next
	case "NATS_URL":
		return "nats://" + next
	}
	return next
}
