package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Reasons for a dead letter or a refused command: the reason label of
// nr_bridge_dead_letters_total and nr_bridge_commands_refused_total. The set
// is fixed so the label cannot grow without bound; anything else is counted
// as ReasonOther.
const (
	ReasonInvalidID        = "invalid_id"             // an org or node ID breaks the ID rule
	ReasonInvalidTarget    = "invalid_target"         // a command subject or key without the target shape
	ReasonInvalidProperty  = "invalid_property"       // an MQTT v5 property a header cannot carry
	ReasonTooLarge         = "too_large"              // over the backbone's or the API's size limit
	ReasonMalformed        = "malformed"              // a command body that is not a JSON object
	ReasonInvalidCommand   = "invalid_command"        // a command field missing or invalid
	ReasonExpired          = "expired"                // a command whose TTL ran out
	ReasonOutOfScope       = "out_of_scope"           // a command, event or reply of an org other than ORG_ID
	ReasonUnsupportedMedia = "unsupported_media_type" // an HTTP body that is not JSON
	ReasonUnavailable      = "unavailable"            // broker not reachable or no PUBACK in time
	ReasonRefused          = "refused"                // the broker refused it (PUBACK reason >= 0x80)
	ReasonRejected         = "rejected"               // the backbone refused the write for good (not for its size)
	ReasonPoison           = "poison"                 // kept failing while later messages on its connection were written
	ReasonOther            = "other"
)

// Reasons is the fixed set of reason label values, in a stable order.
var Reasons = []string{
	ReasonInvalidID, ReasonInvalidTarget, ReasonInvalidProperty, ReasonTooLarge,
	ReasonMalformed, ReasonInvalidCommand, ReasonExpired, ReasonOutOfScope,
	ReasonUnsupportedMedia, ReasonUnavailable, ReasonRefused, ReasonRejected, ReasonPoison, ReasonOther,
}

// Failure is what an error means to the bridge, decided in one place
// (Classify) for every component: the worker, the sinks and their
// dead-letter paths, the commands sources, the publisher, the metrics and
// the HTTP API.
type Failure struct {
	// Reason is the dead-letter reason and the reason label of the
	// metrics: one of Reasons.
	Reason string
	// Retry says whether the same operation may succeed later: a source
	// retries (a commands source until the TTL runs out, the worker until
	// the write succeeds); otherwise the message is dead-lettered or the
	// request refused.
	Retry bool
	// HTTPStatus is the status the API answers with; with Retry set, a
	// 503 or 429 carries Retry-After.
	HTTPStatus int
}

// Classify says what err means. The rules, first match wins:
//
//	error                                 reason                  retry  HTTP
//	ErrInvalidID                          invalid_id              no     400
//	ErrInvalidTarget                      invalid_target          no     400
//	ErrMalformed, ErrBadRequest           malformed / other       no     400
//	ErrStatusNotFound                     other                   no     404
//	ErrOutOfScope                         out_of_scope            no     403
//	ErrTooLarge                           too_large               no     413
//	ErrUnsupportedMedia                   unsupported_media_type  no     415
//	ErrInvalidCommand (*FieldError)       invalid_command         no     422
//	ErrExpired                            expired                 no     422
//	ErrTooManyRequests                    other                   yes    429
//	ErrInvalidProperty                    invalid_property        no     422
//	ErrRejected                           rejected                no     502
//	ErrPoison                             poison                  no     500
//	*RefusedError, Temporary()            refused                 yes    503
//	*RefusedError, permanent              refused                 no     502
//	ErrNotConnected, ErrPublishTimeout,
//	ErrStatusUnavailable                  unavailable             yes    503
//	ErrClosed, context errors             other                   yes    503
//	ErrPermanent (any other)              other                   no     500
//	anything else                         other                   yes    500
//
// An unknown error is retried: a source must never drop a command or an
// event it could still deliver. nil is the zero Failure.
func Classify(err error) Failure {
	switch {
	case err == nil:
		return Failure{}
	case errors.Is(err, ErrInvalidID):
		return Failure{ReasonInvalidID, false, http.StatusBadRequest}
	case errors.Is(err, ErrInvalidTarget):
		return Failure{ReasonInvalidTarget, false, http.StatusBadRequest}
	case errors.Is(err, ErrMalformed):
		return Failure{ReasonMalformed, false, http.StatusBadRequest}
	case errors.Is(err, ErrBadRequest):
		return Failure{ReasonOther, false, http.StatusBadRequest}
	case errors.Is(err, ErrStatusNotFound):
		return Failure{ReasonOther, false, http.StatusNotFound}
	case errors.Is(err, ErrOutOfScope):
		return Failure{ReasonOutOfScope, false, http.StatusForbidden}
	case errors.Is(err, ErrTooLarge):
		return Failure{ReasonTooLarge, false, http.StatusRequestEntityTooLarge}
	case errors.Is(err, ErrUnsupportedMedia):
		return Failure{ReasonUnsupportedMedia, false, http.StatusUnsupportedMediaType}
	case errors.Is(err, ErrInvalidCommand):
		return Failure{ReasonInvalidCommand, false, http.StatusUnprocessableEntity}
	case errors.Is(err, ErrExpired):
		return Failure{ReasonExpired, false, http.StatusUnprocessableEntity}
	case errors.Is(err, ErrTooManyRequests):
		return Failure{ReasonOther, true, http.StatusTooManyRequests}
	case errors.Is(err, ErrInvalidProperty):
		return Failure{ReasonInvalidProperty, false, http.StatusUnprocessableEntity}
	case errors.Is(err, ErrRejected):
		return Failure{ReasonRejected, false, http.StatusBadGateway}
	case errors.Is(err, ErrPoison):
		return Failure{ReasonPoison, false, http.StatusInternalServerError}
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		if refused.Temporary() {
			return Failure{ReasonRefused, true, http.StatusServiceUnavailable}
		}
		return Failure{ReasonRefused, false, http.StatusBadGateway}
	}
	switch {
	case errors.Is(err, ErrNotConnected), errors.Is(err, ErrPublishTimeout), errors.Is(err, ErrStatusUnavailable):
		return Failure{ReasonUnavailable, true, http.StatusServiceUnavailable}
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Failure{ReasonOther, true, http.StatusServiceUnavailable}
	case errors.Is(err, ErrPermanent):
		return Failure{ReasonOther, false, http.StatusInternalServerError}
	}
	return Failure{ReasonOther, true, http.StatusInternalServerError}
}

// BackboneError wraps err, a backbone's answer to the write op, with the
// core's sentinel for what the backbone package recognised in it: tooLarge
// (ErrTooLarge), otherwise permanent (ErrRejected), otherwise nothing (a
// transient failure, retried). natsconn and kafkaconn recognise their
// library's errors (TooLarge, Permanent) without importing the core; this
// is the one place that turns what they recognised into the taxonomy.
func BackboneError(op string, err error, tooLarge, permanent bool) error {
	switch {
	case err == nil:
		return nil
	case tooLarge:
		return fmt.Errorf("%s: %w: %w", op, ErrTooLarge, err)
	case permanent:
		return fmt.Errorf("%s: %w: %w", op, ErrRejected, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// ReasonOf is Classify(err).Reason: the dead-letter reason and metric
// label of err, ReasonOther for an error the bridge does not know, "" for
// nil.
func ReasonOf(err error) string { return Classify(err).Reason }

// Retryable is Classify(err).Retry: whether an operation that failed with
// err may succeed if tried again later. False for nil.
func Retryable(err error) bool { return err != nil && Classify(err).Retry }

// DeadLetterReason is the reason label of a message marked for the
// dead-letter subject at receipt (NewMessage set DeadLetter): a bad ID in
// its topic, or a property no header can carry.
func (m *Message) DeadLetterReason() string {
	if _, err := ParseNodeTopic(m.Topic); err != nil {
		return ReasonOf(err)
	}
	return ReasonInvalidProperty
}
