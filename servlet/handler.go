package servlet

import (
	"net/http"
	"strings"
)

// The Do* methods a servlet may have, each for one HTTP method.
type (
	getter interface {
		DoGet(http.ResponseWriter, *http.Request)
	}
	poster interface {
		DoPost(http.ResponseWriter, *http.Request)
	}
	putter interface {
		DoPut(http.ResponseWriter, *http.Request)
	}
	deleter interface {
		DoDelete(http.ResponseWriter, *http.Request)
	}
	patcher interface {
		DoPatch(http.ResponseWriter, *http.Request)
	}
	optioner interface {
		DoOptions(http.ResponseWriter, *http.Request)
	}
	header interface {
		DoHead(http.ResponseWriter, *http.Request)
	}
)

// Handler returns an http.Handler that dispatches by method to the DoGet,
// DoPost, DoPut, DoDelete, DoPatch, DoOptions and DoHead methods s has
// (each a func(http.ResponseWriter, *http.Request)). HEAD falls back to
// DoGet with the body discarded; OPTIONS without DoOptions answers 204 with
// an Allow header; any other method gets 405 with Allow. If s has none of
// the methods but is an http.Handler, it is returned as it is.
func Handler(s any) http.Handler {
	h := methodHandler{do: map[string]http.HandlerFunc{}}
	if v, ok := s.(getter); ok {
		h.do[http.MethodGet] = v.DoGet
		h.do[http.MethodHead] = func(w http.ResponseWriter, r *http.Request) { v.DoGet(headWriter{w}, r) }
	}
	if v, ok := s.(header); ok {
		h.do[http.MethodHead] = v.DoHead
	}
	if v, ok := s.(poster); ok {
		h.do[http.MethodPost] = v.DoPost
	}
	if v, ok := s.(putter); ok {
		h.do[http.MethodPut] = v.DoPut
	}
	if v, ok := s.(deleter); ok {
		h.do[http.MethodDelete] = v.DoDelete
	}
	if v, ok := s.(patcher); ok {
		h.do[http.MethodPatch] = v.DoPatch
	}
	if len(h.do) == 0 {
		if hh, ok := s.(http.Handler); ok {
			return hh
		}
	}
	if v, ok := s.(optioner); ok {
		h.do[http.MethodOptions] = v.DoOptions
	}
	h.allow = allowHeader(h.do)
	return h
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

// allowHeader lists the methods in a fixed order, OPTIONS always included.
func allowHeader(do map[string]http.HandlerFunc) string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodDelete, http.MethodPatch} {
		if do[m] != nil {
			allow = append(allow, m)
		}
	}
	return strings.Join(append(allow, http.MethodOptions), ", ")
}

// headWriter answers HEAD with DoGet's status and headers but no body.
type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(p []byte) (int, error)       { return len(p), nil }
func (w headWriter) WriteString(s string) (int, error) { return len(s), nil }
func (w headWriter) Unwrap() http.ResponseWriter       { return w.ResponseWriter }
