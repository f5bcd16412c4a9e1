package devmode

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// ErrAddrInUse means another process (often a broker or an earlier
// nr-bridge -dev) already listens on an address dev mode needs. The error
// wrapping it names the variable to change.
var ErrAddrInUse = errors.New("address already in use")

// CheckFree listens on addr and closes the listener at once, so a busy port
// is reported before any server starts, with the variable that sets it
// (MQTT_URL, NATS_URL, KAFKA_BROKERS, HTTP_ADDR) and a suggestion. Another process can
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
	case "HTTP_ADDR":
		if host == "" {
			return ":" + strconv.Itoa(p+1)
		}
	}
	return next
}

// Addr is an address dev mode listens on and the variable that sets it.
type Addr struct {
	Variable string // MQTT_URL, NATS_URL, KAFKA_BROKERS, HTTP_ADDR
	Addr     string // host:port
}

// PortErrors are the addresses CheckAllFree could not listen on, each
// error naming its variable. errors.Is(err, ErrAddrInUse) holds when one
// of them is busy.
type PortErrors []error

// Error lists every address that cannot be used, on one line.
func (e PortErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	if len(e) == 1 {
		return msgs[0]
	}
	return fmt.Sprintf("%d addresses cannot be used: %s", len(e), strings.Join(msgs, "; "))
}

// Unwrap gives errors.Is and errors.As each address's error.
func (e PortErrors) Unwrap() []error { return e }

// CheckAllFree is CheckFree for every address, so that one run reports
// every clash, not the first one; nil when all are free, else PortErrors.
func CheckAllFree(addrs ...Addr) error {
	var errs PortErrors
	for _, a := range addrs {
		if err := CheckFree(a.Addr, a.Variable); err != nil {
			errs = append(errs, err)
		}
	}
	if errs == nil {
		return nil
	}
	return errs
}

// splitPort splits host:port and checks the port (1 to 65535; port 0
// would mean a default or a random port to the servers, not what the
// variable says).
func splitPort(addr, variable string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %s: %w", variable, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%s: %s: want a port between 1 and 65535", variable, addr)
	}
	return host, port, nil
}
