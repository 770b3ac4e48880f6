package servlet

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// One interface per Do* method a servlet may have. (rw and req are short
// names for the parameter types, so that each interface fits on a line.)
type (
	rw  = http.ResponseWriter
	req = *http.Request

	doGet     interface{ DoGet(rw, req) }
	doHead    interface{ DoHead(rw, req) }
	doPost    interface{ DoPost(rw, req) }
	doPut     interface{ DoPut(rw, req) }
	doDelete  interface{ DoDelete(rw, req) }
	doPatch   interface{ DoPatch(rw, req) }
	doOptions interface{ DoOptions(rw, req) }
)

// doMethods lists the Do* methods, in the order the Allow header names
// their HTTP methods. bind returns a servlet's method, or nil if it has
// none by that name and signature.
var doMethods = []struct {
	method, name string
	bind         func(s any) http.HandlerFunc
}{
	{http.MethodGet, "DoGet", bind(doGet.DoGet)},
	{http.MethodHead, "DoHead", bind(doHead.DoHead)},
	{http.MethodPost, "DoPost", bind(doPost.DoPost)},
	{http.MethodPut, "DoPut", bind(doPut.DoPut)},
	{http.MethodDelete, "DoDelete", bind(doDelete.DoDelete)},
	{http.MethodPatch, "DoPatch", bind(doPatch.DoPatch)},
	{http.MethodOptions, "DoOptions", bind(doOptions.DoOptions)},
}

// bind turns a method expression into a function that finds the method on
// a servlet. A type assertion, not reflection, so that a call costs what a
// method call costs.
func bind[S any](method func(S, http.ResponseWriter, *http.Request)) func(any) http.HandlerFunc {
	return func(s any) http.HandlerFunc {
		v, ok := s.(S)
		if !ok {
			return nil
		}
		return func(w http.ResponseWriter, r *http.Request) { method(v, w, r) }
	}
}

// Handler returns an [http.Handler] that dispatches by method to the DoGet,
// DoHead, DoPost, DoPut, DoDelete, DoPatch and DoOptions methods s has
// (each a func(http.ResponseWriter, *http.Request)). HEAD falls back to
// DoGet with the body discarded; OPTIONS without DoOptions answers 204 with
// an Allow header; any other method gets 405 with Allow. If s has none of
// the methods but is an http.Handler, it is returned as it is.
//
// Handler panics if s is neither: a value with none of the methods answers
// every request 405, which is never what was meant. The message names the
// methods of s that look like misspelled Do* methods or have the wrong
// signature. [Container.Handle] reports the same through Start instead.
func Handler(s any) http.Handler {
	h, err := handlerFor(s)
	if err != nil {
		panic("servlet: " + err.Error())
	}
	return h
}

func handlerFor(s any) (http.Handler, error) {
	do := map[string]http.HandlerFunc{}
	for _, m := range doMethods {
		if f := m.bind(s); f != nil {
			do[m.method] = f
		}
	}
	if len(do) == 0 {
		if h, ok := s.(http.Handler); ok {
			return h, nil
		}
		return nil, notAServlet(s)
	}
	if get := do[http.MethodGet]; get != nil && do[http.MethodHead] == nil {
		do[http.MethodHead] = func(w http.ResponseWriter, r *http.Request) { get(headWriter{w}, r) }
	}
	return methodHandler{do: do, allow: allowHeader(do)}, nil
}

// notAServlet explains why s is not a servlet, pointing at what was
// probably meant: a method whose name looks like a Do* method's or
// ServeHTTP's, or methods that only a pointer to s has.
func notAServlet(s any) error {
	names := make([]string, len(doMethods))
	for i, m := range doMethods {
		names[i] = m.name
	}
	msg := fmt.Sprintf("%T is not a servlet: it is not an http.Handler and has none of the methods %s",
		s, strings.Join(names, ", "))
	v := reflect.ValueOf(s)
	if !v.IsValid() {
		return errors.New(msg)
	}
	methods := append(names, "ServeHTTP")
	var hints []string
	for i := range v.NumMethod() {
		name := v.Type().Method(i).Name
		switch meant := lookalike(name, methods); {
		case meant == name: // the right name, so the signature is wrong
			hints = append(hints, fmt.Sprintf("its %s is %s, not func(http.ResponseWriter, *http.Request)", name, v.Method(i).Type()))
		case meant != "":
			hints = append(hints, fmt.Sprintf("its method %s looks like a misspelled %s", name, meant))
		}
	}
	if t := v.Type(); t.Kind() != reflect.Pointer {
		if _, err := handlerFor(reflect.New(t).Interface()); err == nil {
			hints = append(hints, fmt.Sprintf("*%s has the methods: pass a pointer", t))
		}
	}
	return errors.New(strings.Join(append([]string{msg}, hints...), "; "))
}

// lookalike returns what a method called name was probably meant to be:
// the one of methods it equals but for case, else "Do* method" if name
// starts with "Do"; or "" if it looks like none of them.
func lookalike(name string, methods []string) string {
	for _, m := range methods {
		if strings.EqualFold(name, m) {
			return m
		}
	}
	if len(name) > 2 && strings.EqualFold(name[:2], "do") {
		return "Do* method"
	}
	return ""
}

type methodHandler struct {
	do    map[string]http.HandlerFunc
	allow string
}

func (h methodHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if do, ok := h.do[r.Method]; ok {
		do(w, r)
		return
	}
	w.Header().Set("Allow", h.allow)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

// allowHeader lists the methods in doMethods' order, OPTIONS always
// included.
func allowHeader(do map[string]http.HandlerFunc) string {
	var allow []string
	for _, m := range doMethods {
		if do[m.method] != nil || m.method == http.MethodOptions {
			allow = append(allow, m.method)
		}
	}
	return strings.Join(allow, ", ")
}

// headWriter answers HEAD with DoGet's status and headers but no body.
type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(p []byte) (int, error)       { return len(p), nil }
func (w headWriter) WriteString(s string) (int, error) { return len(s), nil }
func (w headWriter) Unwrap() http.ResponseWriter       { return w.ResponseWriter }
