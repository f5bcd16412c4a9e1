package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// jsonErrors makes every error answer JSON, {"error": "..."}, including
// those written by code that is not ours: the ServeMux's 404 and 405 (the
// Allow header kept), and any other http.Error (text/plain) from a
// library handler such as the metrics one. Our own handlers already write
// JSON and pass through untouched.
func jsonErrors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ew := &errorWriter{ResponseWriter: w, r: r}
		h.ServeHTTP(ew, r)
		ew.finish()
	})
}

// errorWriter holds back a text/plain error answer and writes it as JSON
// once the handler returned, with the text it wrote as the message.
type errorWriter struct {
	http.ResponseWriter
	r    *http.Request
	code int // a held-back error status, 0 if none
	text bytes.Buffer
}

func (e *errorWriter) WriteHeader(code int) {
	if code >= 400 && e.code == 0 && strings.HasPrefix(e.Header().Get("Content-Type"), "text/plain") {
		e.code = code
		return
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *errorWriter) Write(p []byte) (int, error) {
	if e.code != 0 {
		if e.text.Len() < 1024 {
			e.text.Write(p[:min(len(p), 1024-e.text.Len())])
		}
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (e *errorWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// finish writes the held-back error as JSON.
func (e *errorWriter) finish() {
	if e.code == 0 {
		return
	}
	msg := strings.TrimSpace(e.text.String())
	switch e.code {
	case http.StatusNotFound:
		msg = fmt.Sprintf("no route for %s %s", e.r.Method, e.r.URL.Path)
	case http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("method %s not allowed on %s, allowed: %s", e.r.Method, e.r.URL.Path, e.Header().Get("Allow"))
	}
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.code))
	}
	h := e.Header()
	h.Del("X-Content-Type-Options")
	h.Del("Content-Length")
	writeError(e.ResponseWriter, e.code, msg, "")
}

// jsonErrorListener wraps the plain-TCP listener so that the answers
// net/http's server writes by itself before any handler runs are JSON too:
// 431 when the request headers exceed MaxHeaderBytes, 400 for a request it
// cannot parse, 501 for an unknown transfer encoding. net/http has no hook
// for them; it writes each one in a single Write, always with the same
// header block, which no handler's answer has (headers are written in
// sorted order, Connection before Content-Type). Over HTTPS these bytes
// are encrypted below the server: there net/http's text answers stay.
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

// jsonErrorConn rewrites net/http's own plain-text error answers.
type jsonErrorConn struct{ net.Conn }

// serverErrorHeaders is the header block of net/http's own error answers.
const serverErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if b, ok := jsonServerError(p); ok {
		if _, err := c.Conn.Write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite keeps net/http's half-close after a 431 (closeWriteAndWait),
// which it finds by a type assertion on the connection.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// jsonServerError turns "HTTP/1.1 431 Request Header Fields Too
// Large<serverErrorHeaders>431 Request Header Fields Too Large" into the
// same status with a JSON body; ok is false for any other bytes.
func jsonServerError(p []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if !bytes.HasPrefix(p, []byte(proto)) {
		return nil, false
	}
	i := bytes.Index(p, []byte(serverErrorHeaders))
	if i < 0 || bytes.IndexByte(p[:i], '\n') >= 0 {
		return nil, false
	}
	statusLine := string(p[len(proto):i])
	code, err := strconv.Atoi(strings.SplitN(statusLine, " ", 2)[0])
	if err != nil || code < 400 {
		return nil, false
	}
	text := string(p[i+len(serverErrorHeaders):])
	// "431 Request Header Fields Too Large", "400 Bad Request: missing
	// required Host header": the message is what follows the code.
	msg := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(text, strconv.Itoa(code))))
	if code == http.StatusRequestHeaderFieldsTooLarge {
		msg = "request header fields too large"
	}
	body, _ := json.Marshal(errorBody{Error: msg})
	body = append(body, '\n')
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", proto, statusLine, len(body))
	b.Write(body)
	return b.Bytes(), true
}
