package sse_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/cometkit/cometkit/sse"
)

func ExampleSend() {
	rec := httptest.NewRecorder()
	sse.Send(rec, sse.Event{ID: "mbk2z3-42", Type: "message", Data: []byte("two\nlines")})
	fmt.Print(rec.Body.String())
	// Output:
	// id: mbk2z3-42
	// event: message
	// data: two
	// data: lines
}
