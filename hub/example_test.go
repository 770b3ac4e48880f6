package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
)

// A hub on /hub/, a WebSocket client subscribing from now, and a message
// the application publishes.
func Example() {
	mgr := clientmgr.New()
	defer mgr.Close()
	h := hub.New(mgr)
	mux := http.NewServeMux()
	mux.Handle("/hub/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer h.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/hub/",
		&websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}})
	if err != nil {
		panic(err)
	}
	defer conn.CloseNow()
	conn.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","topic":"room:lobby"}`))
	_, subscribed, _ := conn.Read(ctx)
	fmt.Println(string(subscribed))

	mgr.Broadcast(ctx, "room:lobby", []byte("hello"))
	_, message, _ := conn.Read(ctx)
	fmt.Println(strings.Contains(string(message), `"type":"message"`), strings.Contains(string(message), `"data":"hello"`))
	// Output:
	// {"type":"subscribed","topic":"room:lobby","cursor":"0"}
	// true true
}
