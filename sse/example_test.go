package sse_test

import (
	"fmt"
	"net/http/httptest"
	"strings"

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

func ExampleReader() {
	stream := strings.NewReader(": connected\n\nid: 7\nevent: join\ndata: alice\n\ndata: two\ndata: lines\n\n")
	events := sse.NewReader(stream)
	for {
		ev, err := events.Next()
		if err != nil {
			fmt.Println(err) // io.EOF: the stream ended
			return
		}
		fmt.Printf("%q %q %q\n", ev.ID, ev.Type, ev.Data)
	}
	// Output:
	// "7" "join" "alice"
	// "" "" "two\nlines"
	// EOF
}
