package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/lineage"
)

// lineageSite serves the web view and the API of g, as the admin port does.
func lineageSite(t *testing.T, g *lineage.Graph) string {
	t.Helper()
	mux := http.NewServeMux()
	g.Register(mux)
	lineage.RegisterWebView(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestWebViewEmptyGraph: before any traffic the page says so, and keeps
// refreshing without an error.
func TestWebViewEmptyGraph(t *testing.T) {
	bctx := browser(t)
	g, err := lineage.Open(lineage.Config{})
	require.NoError(t, err)
	site := lineageSite(t, g)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(site+"/lineage"),
		chromedp.WaitVisible(`#empty`),
		chromedp.Sleep(3500*time.Millisecond), // one refresh more
	))
	assert.Contains(t, eval[string](t, bctx, `document.getElementById('empty').textContent`), "No traffic seen")
	status := eval[string](t, bctx, `document.getElementById('status').textContent`)
	assert.Contains(t, status, "0 nodes, 0 edges")
	assert.NotContains(t, status, "failed")
}

// TestWebViewHostileNames: node names come from clients (topic names, the
// x-pipemesh-job header, principals, client ids) and statements are SQL
// text a client sent; the page must show them as text, never run them as
// HTML, in the graph, the tooltips and the panel.
func TestWebViewHostileNames(t *testing.T) {
	bctx := browser(t)
	g, err := lineage.Open(lineage.Config{})
	require.NoError(t, err)
	job := `<img src=x onerror="window.pwned='job'">`
	topic := `"><svg onload="window.pwned='topic'"/>`
	ds := `a/../<b id=injected>b</b>`
	sql := `SELECT '<script>window.pwned="sql"</script>' FROM t`
	client := lineage.Client{Principal: `User:<i id=injected>x</i>`, ClientID: `<u id=injected>`, Host: "127.0.0.1"}
	now := time.Now()
	g.Observe([]lineage.Observation{
		{From: lineage.NodeRef{Type: lineage.Job, Name: job}, To: lineage.NodeRef{Type: lineage.FlightDataset, Name: ds},
			Type: lineage.Writes, Bytes: 100, Records: 10, Requests: 1, At: now, Client: client,
			Statement: lineage.Statement{Text: sql, Command: "cmd:text"}},
		{From: lineage.NodeRef{Type: lineage.Application, Name: job}, To: lineage.NodeRef{Type: lineage.Topic, Name: topic},
			Type: lineage.Produces, Bytes: 100, Records: 10, Requests: 1, At: now, Client: client},
	})
	site := lineageSite(t, g)
	jobID := "job:" + job
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(site+"/lineage?since=1h"),
		chromedp.WaitVisible(`g.node`),
	))
	ids := eval[[]string](t, bctx, `[...document.querySelectorAll('g.node')].map(g => g.dataset.id)`)
	assert.ElementsMatch(t, []string{jobID, "flight_dataset:" + ds, "application:" + job, "topic:" + topic}, ids)
	// Open the job's panel by clicking it.
	ok := eval[bool](t, bctx, `(() => {
		const g = [...document.querySelectorAll('g.node')].find(g => g.dataset.id.startsWith('job:'));
		g.querySelector('rect').dispatchEvent(new MouseEvent('click', {bubbles: true}));
		return true;
	})()`)
	require.True(t, ok)
	require.NoError(t, chromedp.Do(bctx, chromedp.WaitVisible(`#panel.open ol.queries code`)))
	assert.Equal(t, job, eval[string](t, bctx, `document.querySelector('#panel h2').textContent`))
	assert.Equal(t, sql, eval[string](t, bctx, `document.querySelector('#panel ol.queries code').textContent`))
	panel := eval[string](t, bctx, `document.getElementById('panel').innerText`)
	assert.Contains(t, panel, client.Principal)
	assert.Contains(t, panel, "flight_dataset:"+ds)

	// Nothing was parsed as markup, and no handler ran.
	assert.Equal(t, "undefined", eval[string](t, bctx, `typeof window.pwned`))
	assert.Zero(t, eval[int](t, bctx, `document.querySelectorAll('#injected, img, script:not([src]), svg svg, b, i, u').length`))

	// The selection goes to the URL (after a short debounce), and the link
	// opens the same panel.
	require.NoError(t, chromedp.Do(bctx, chromedp.Sleep(400*time.Millisecond)))
	link := eval[string](t, bctx, `location.href`)
	require.True(t, strings.Contains(link, "node="), link)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(`#panel.open ol.queries code`),
	))
	assert.Equal(t, job, eval[string](t, bctx, `document.querySelector('#panel h2').textContent`))
	assert.Equal(t, "undefined", eval[string](t, bctx, `typeof window.pwned`))
}
