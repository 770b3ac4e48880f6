// Package servlet gives cometkit the shape of a servlet container: values
// with DoGet, DoPost, … methods, mapped by Servlet-spec patterns, with
// Init and Destroy, filters, and every request served through one
// [continuation.Dispatcher], so any servlet may suspend its request.
//
//	c := servlet.NewContainer(continuation.WithWorkers(64))
//	c.Use(logging)                         // filters: func(http.Handler) http.Handler
//	c.Handle("/chat/*", &chatServlet{})    // DoGet, DoPost; optional Init, Destroy
//	c.HandleWith("*.json", api, map[string]string{"pretty": "true"})
//	c.Handle("/", http.FileServer(http.Dir("static")))
//	if err := c.Start(); err != nil {      // runs Init; names the servlet that failed
//		log.Fatal(err)
//	}
//	srv := &http.Server{Addr: ":8080", Handler: c}
//	srv.RegisterOnShutdown(c.Drain)        // expire suspended requests, so they answer
//	// ... on SIGTERM:
//	srv.Shutdown(ctx)                      // the requests net/http still serves
//	c.Shutdown(ctx)                        // those waiting detached from it; then Destroy
//
// [Handler] alone turns a value with Do* methods into an [http.Handler], for
// use outside a Container. A value with no Do* method that is not an
// http.Handler either is refused: [Container.Start] returns an error naming
// its pattern, and Handler panics.
//
// # Paths
//
// A Container maps a request by its canonical path, as the Servlet
// specification (6.0, section 3.5.2) defines it, so that no spelling of a
// path reaches a servlet other than the one its canonical form maps to:
// "/x/../admin/a" and "//admin/a" go to the servlet of "/admin/*". From
// the path as the client sent it, the Container removes each segment's
// parameters (";jsessionid=1"), decodes %-escapes, drops empty segments
// other than the last ("//" is "/"), and resolves "." and "..".
//
// It answers 400, before any filter runs, a path whose meaning depends on
// who reads it: one that does not start with "/", or that ".." takes above
// the root; one with an encoded "/" ("%2F"), a "\" or a control character
// (encoded or not), a "#" (a fragment, which clients do not send), a
// malformed escape or invalid UTF-8; one with a "." or ".." segment that
// is encoded ("%2e%2e") or has a parameter ("..;"); and one with an empty
// segment with a parameter, other than the last.
//
// Filters and servlets find the canonical path in r.URL.Path (decoded;
// r.URL.RawPath is empty), as a Java servlet finds it in its servlet path
// and path info; r.RequestURI keeps what the client sent.
//
// # Shutting down
//
// [Container.Drain] begins the shutdown and returns at once, which is what
// [http.Server.RegisterOnShutdown] wants: new requests get 503 with
// Retry-After and every suspended request is expired, so that its servlet
// answers now, rather than at its timeout. [http.Server.Shutdown] then
// waits for the answers. [Container.Shutdown] is Drain plus that wait, and
// runs each servlet's Destroy once the last request has finished.
//
// # Options
//
// NewContainer passes its options to [continuation.NewDispatcher], which
// panics on a value that cannot be meant (a negative size, a pool of no
// workers), naming the option; leaving an option out gives its default. Setup mistakes in the mappings
// (a bad or duplicate pattern, a value that is not a servlet, a nil
// filter) are returned by Start, every one of them; Handle and Use after
// Start panic.
package servlet
