// Package servlet gives cometkit the shape of a servlet container: values
// with DoGet, DoPost, … methods, mapped by Servlet-spec patterns, with
// Init and Destroy, filters, and every request served through one
// continuation.Dispatcher, so any servlet may suspend its request.
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
//	srv.RegisterOnShutdown(func() { c.Shutdown(context.Background()) })
//
// Handler alone turns a value with Do* methods into an http.Handler, for
// use outside a Container.
package servlet
