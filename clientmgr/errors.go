package clientmgr

import "errors"

// Errors returned by the Manager. Compare them with errors.Is.
var (
	// ErrInvalidTopic: the topic is empty, longer than MaxTopicLen bytes,
	// not valid UTF-8, or has control characters.
	ErrInvalidTopic = errors.New("clientmgr: invalid topic")

	// ErrMessageTooLarge: Broadcast with more data than WithMaxMessageSize.
	ErrMessageTooLarge = errors.New("clientmgr: message too large")

	// ErrClosed: the Manager has been closed.
	ErrClosed = errors.New("clientmgr: manager closed")

	// ErrSubscriptionClosed: Take on a Subscription that has been closed.
	ErrSubscriptionClosed = errors.New("clientmgr: subscription closed")

	// ErrNotSuspended: Register with a continuation that is not suspended.
	ErrNotSuspended = errors.New("clientmgr: continuation not suspended")

	// ErrAlreadyRegistered: a second registration of one continuation on
	// one topic in one suspension; the first stands.
	ErrAlreadyRegistered = errors.New("clientmgr: already registered on this topic")

	// ErrTooManyTopics: a new topic beyond WithMaxTopics. Existing topics
	// keep working; idle topics are reclaimed (WithIdleTimeout).
	ErrTooManyTopics = errors.New("clientmgr: too many topics")
)
