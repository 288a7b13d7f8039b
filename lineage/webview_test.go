package lineage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWebViewAssets: the page and its assets are served from the binary,
// and the page loads nothing from another origin.
func TestWebViewAssets(t *testing.T) {
	mux := http.NewServeMux()
	RegisterWebView(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	code, typ, page := get("/lineage")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, typ, "text/html")
	assert.Contains(t, page, `<script src="/lineage/app.js">`)
	assert.NotContains(t, page, "http://")
	assert.NotContains(t, page, "https://")
	for path, want := range map[string]string{"/lineage/app.js": "javascript", "/lineage/style.css": "text/css"} {
		code, typ, body := get(path)
		require.Equal(t, http.StatusOK, code, path)
		assert.Contains(t, typ, want, path)
		assert.NotEmpty(t, body)
		body = strings.ReplaceAll(body, "http://www.w3.org/2000/svg", "") // a namespace name, not a fetch
		assert.NotContains(t, body, "http://", "%s fetches nothing from the network", path)
		assert.NotContains(t, body, "https://", "%s fetches nothing from the network", path)
	}
	code, _, _ = get("/lineage/nope.js")
	assert.Equal(t, http.StatusNotFound, code)
}
