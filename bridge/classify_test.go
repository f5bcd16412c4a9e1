package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// TestClassify pins the one taxonomy: every error the bridge produces, the
// reason label it gets, whether it is retried and its HTTP status.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Failure
	}{
		{"nil", nil, Failure{}},
		{"invalid id", fmt.Errorf("org id %q: %w", "a+b", ErrInvalidID), Failure{ReasonInvalidID, false, http.StatusBadRequest}},
		{"invalid target", ErrInvalidTarget, Failure{ReasonInvalidTarget, false, http.StatusBadRequest}},
		{"target with bad id", fmt.Errorf("%w: %w", ErrInvalidTarget, ErrInvalidID), Failure{ReasonInvalidID, false, http.StatusBadRequest}},
		{"malformed", fmt.Errorf("not json: %w", ErrMalformed), Failure{ReasonMalformed, false, http.StatusBadRequest}},
		{"bad request", ErrBadRequest, Failure{ReasonOther, false, http.StatusBadRequest}},
		{"status not found", ErrStatusNotFound, Failure{ReasonOther, false, http.StatusNotFound}},
		{"status evicted", ErrStatusEvicted, Failure{ReasonOther, false, http.StatusNotFound}},
		{"out of scope", fmt.Errorf("org: %w", ErrOutOfScope), Failure{ReasonOutOfScope, false, http.StatusForbidden}},
		{"too large", fmt.Errorf("write: %w", ErrTooLarge), Failure{ReasonTooLarge, false, http.StatusRequestEntityTooLarge}},
		{"unsupported media", ErrUnsupportedMedia, Failure{ReasonUnsupportedMedia, false, http.StatusUnsupportedMediaType}},
		{"field", &FieldError{Field: "ttl_sec", Reason: "x"}, Failure{ReasonInvalidCommand, false, http.StatusUnprocessableEntity}},
		{"expired", ErrExpired, Failure{ReasonExpired, false, http.StatusUnprocessableEntity}},
		{"too many requests", ErrTooManyRequests, Failure{ReasonOther, true, http.StatusTooManyRequests}},
		{"invalid property", ErrInvalidProperty, Failure{ReasonInvalidProperty, false, http.StatusUnprocessableEntity}},
		{"rejected", fmt.Errorf("publish: %w: 400", ErrRejected), Failure{ReasonRejected, false, http.StatusBadGateway}},
		{"poison", ErrPoison, Failure{ReasonPoison, false, http.StatusInternalServerError}},
		{"refused for good", &RefusedError{ReasonCode: 0x87}, Failure{ReasonRefused, false, http.StatusBadGateway}},
		{"refused for now", fmt.Errorf("publish: %w", &RefusedError{ReasonCode: 0x97}), Failure{ReasonRefused, true, http.StatusServiceUnavailable}},
		{"not connected", ErrNotConnected, Failure{ReasonUnavailable, true, http.StatusServiceUnavailable}},
		{"publish timeout", ErrPublishTimeout, Failure{ReasonUnavailable, true, http.StatusServiceUnavailable}},
		{"store unavailable", ErrStatusUnavailable, Failure{ReasonUnavailable, true, http.StatusServiceUnavailable}},
		{"closed", ErrClosed, Failure{ReasonOther, true, http.StatusServiceUnavailable}},
		{"canceled", fmt.Errorf("publish: %w", context.Canceled), Failure{ReasonOther, true, http.StatusServiceUnavailable}},
		{"permanent", ErrPermanent, Failure{ReasonOther, false, http.StatusInternalServerError}},
		{"unknown", errors.New("boom"), Failure{ReasonOther, true, http.StatusInternalServerError}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Fatalf("Classify(%v) = %+v, want %+v", tc.err, got, tc.want)
			}
			if ReasonOf(tc.err) != tc.want.Reason || Retryable(tc.err) != (tc.err != nil && tc.want.Retry) {
				t.Fatalf("ReasonOf/Retryable disagree with Classify for %v", tc.err)
			}
		})
	}
	// Every reason Classify gives is in Reasons, the label's fixed set.
	known := map[string]bool{"": true}
	for _, r := range Reasons {
		known[r] = true
	}
	for _, err := range []error{ErrInvalidID, ErrUnsupportedMedia, ErrInvalidProperty, ErrPoison, &RefusedError{}} {
		if r := ReasonOf(err); !known[r] {
			t.Errorf("reason %q of %v is not in Reasons", r, err)
		}
	}
}
