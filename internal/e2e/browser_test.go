package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's headless Chromium through the DevTools
// protocol. One browser process serves every test in the package, and each
// test gets its own browser context (a fresh profile in memory: no shared
// cookies), which keeps a test run to one Chromium start-up.

// browserStepTimeout bounds one step of a browser test, such as waiting for
// the next page. A wrong page fails the test after this long.
const browserStepTimeout = 15 * time.Second

var sharedBrowser struct {
	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc
	err     error
	dataDir string
}

// TestMain stops the shared browser after the last test.
func TestMain(m *testing.M) {
	code := m.Run()
	if sharedBrowser.cancel != nil {
		sharedBrowser.cancel()
		_ = os.RemoveAll(sharedBrowser.dataDir)
	}
	os.Exit(code)
}

// chromiumPath returns the Chromium binary to use: $CHROMIUM_PATH, or the
// first of the usual names on $PATH.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM_PATH"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// inCI reports whether the tests run in CI, where a missing browser is a
// failure and not a reason to skip.
func inCI() bool {
	ci := os.Getenv("CI")
	return ci != "" && ci != "false" && ci != "0"
}

// startBrowser starts the shared headless Chromium once.
func startBrowser(path string) (context.Context, error) {
	sharedBrowser.once.Do(func() {
		dataDir, err := os.MkdirTemp("", "deviceauth-chromium-")
		if err != nil {
			sharedBrowser.err = err
			return
		}
		sharedBrowser.dataDir = dataDir

		opts := []chromedp.ExecAllocatorOption{
			chromedp.ExecPath(path),
			chromedp.UserDataDir(dataDir),
			chromedp.Headless,
			// The tests run as root in containers, where the sandbox
			// cannot start.
			chromedp.NoSandbox,
			chromedp.NoFirstRun,
			chromedp.NoDefaultBrowserCheck,
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-extensions", true),
			chromedp.Flag("disable-default-apps", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			// Every host name fails to resolve, so a page can reach
			// nothing but the loopback addresses the tests serve on.
			chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
			chromedp.WindowSize(412, 915),
		}
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
		sharedBrowser.cancel = func() {
			cancelBrowser()
			cancelAlloc()
		}

		// The first run starts the browser, which lives as long as the
		// context of that run, so it gets no timeout.
		if err := chromedp.Do(browserCtx); err != nil {
			sharedBrowser.err = fmt.Errorf("start %s: %w", path, err)
			return
		}
		sharedBrowser.ctx = browserCtx
	})
	return sharedBrowser.ctx, sharedBrowser.err
}

// tab is one browser tab in its own browser context.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// newTab opens a tab in the shared browser. Without Chromium the test is
// skipped, unless it runs in CI. When the test fails, the tab's last page
// is saved as a screenshot and as HTML, and the directory is logged.
func newTab(t *testing.T) *tab {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if inCI() {
			t.Fatal("chromium is not installed, and CI is set: install it with apt-get install -y chromium, or set CHROMIUM_PATH")
		}
		t.Skip("skipping browser test: chromium is not installed (apt-get install -y chromium, or set CHROMIUM_PATH)")
	}
	browserCtx, err := startBrowser(path)
	if err != nil {
		t.Fatalf("start the shared browser: %v", err)
	}

	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a browser tab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			tb.saveArtifacts()
		}
	})
	return tb
}

// run runs actions in the tab, each step bounded by browserStepTimeout.
func (tb *tab) run(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tb.ctx, browserStepTimeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// must runs actions and fails the test, naming step, if they fail.
func (tb *tab) must(step string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := tb.run(actions...); err != nil {
		tb.t.Fatalf("%s: %v", step, err)
	}
}

// waitForPage waits until the page's heading is title.
func (tb *tab) waitForPage(title string) {
	tb.t.Helper()
	err := tb.run(chromedp.WaitVisible(chromedp.Search(fmt.Sprintf(`//h1[normalize-space()=%q]`, title))))
	if err != nil {
		ctx, cancel := context.WithTimeout(tb.ctx, time.Second)
		defer cancel()
		got, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
		tb.t.Fatalf("waiting for the page %q: %v (the page shows %q)", title, err, got)
	}
}

// text returns the visible text of the first element matching the CSS
// selector.
func (tb *tab) text(selector string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserStepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		tb.t.Fatalf("read the text of %s: %v", selector, err)
	}
	return strings.TrimSpace(s)
}

// saveArtifacts writes a full-page screenshot and the HTML of the current
// page to $BROWSER_ARTIFACTS_DIR, or to a new directory under the system's
// temporary directory, and logs where.
func (tb *tab) saveArtifacts() {
	dir := os.Getenv("BROWSER_ARTIFACTS_DIR")
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "deviceauth-browser-artifacts-")
		if err != nil {
			tb.t.Logf("no screenshot: %v", err)
			return
		}
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(tb.t.Name())

	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	location, _ := chromedp.Run(ctx, chromedp.Location())
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("no screenshot: %v", err)
		return
	}
	shot := filepath.Join(dir, name+".png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		tb.t.Logf("no screenshot: %v", err)
		return
	}
	_ = os.WriteFile(filepath.Join(dir, name+".html"), []byte(html), 0o644)
	tb.t.Logf("browser was at %s; screenshot saved to %s", location, shot)
}

// axNode is one node of the accessibility tree that Chromium gives screen
// readers.
type axNode struct {
	Role string
	Name string
}

// accessibilityTree returns the nodes of the current page's accessibility
// tree that are not ignored.
func (tb *tab) accessibilityTree() []axNode {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserStepTimeout)
	defer cancel()
	nodes, err := chromedp.Run(ctx, func(ctx context.Context, target *chromedp.Target) ([]axNode, error) {
		res, err := cdp.Call(ctx, target, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
		if err != nil {
			return nil, err
		}
		var out []axNode
		for _, n := range res.Nodes {
			if n.Ignored {
				continue
			}
			out = append(out, axNode{Role: axString(n.Role), Name: axString(n.Name)})
		}
		return out, nil
	})
	if err != nil {
		tb.t.Fatalf("read the accessibility tree: %v", err)
	}
	return nodes
}

func axString(v *accessibility.Value) string {
	if v == nil {
		return ""
	}
	var s string
	if err := json.Unmarshal([]byte(v.Value), &s); err != nil {
		return ""
	}
	return s
}

// hasNode reports whether the tree has a node with the role whose name
// contains name.
func hasNode(tree []axNode, role, name string) bool {
	for _, n := range tree {
		if n.Role == role && strings.Contains(n.Name, name) {
			return true
		}
	}
	return false
}

// fitsViewport reports whether the page needs no sideways scrolling in the
// phone-sized window.
func (tb *tab) fitsViewport() bool {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserStepTimeout)
	defer cancel()
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil {
		tb.t.Fatalf("measure the page width: %v", err)
	}
	return fits
}
