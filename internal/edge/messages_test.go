package edge

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// usedKey matches message keys in templates ({{.L.T "title.consent"}}) and
// in Go source ("error.bad_code").
var usedKey = regexp.MustCompile(`"((?:title|time|enter|confirm|signin|signout|consent|scope|result|link|error|devices|duration|format|code|device_kind)\.[a-z_.-]+)"`)

func TestCatalogHasEveryUsedKey(t *testing.T) {
	var sources []string
	templates, _ := fs.Glob(templateFiles, "templates/*.html")
	for _, name := range templates {
		data, err := templateFiles.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		sources = append(sources, string(data))
	}
	goFiles, _ := filepath.Glob("*.go")
	for _, name := range goFiles {
		if name == "messages.go" || strings.HasSuffix(name, "_test.go") {
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		sources = append(sources, string(data))
	}

	found := 0
	for _, src := range sources {
		for _, m := range usedKey.FindAllStringSubmatch(src, -1) {
			found++
			if _, ok := english.messages[m[1]]; !ok {
				t.Errorf("key %q is used but missing from the English catalog", m[1])
			}
		}
	}
	if found < 50 {
		t.Errorf("found %d uses of message keys, want many more; the pattern no longer matches the code", found)
	}

	// Outcomes are looked up as "title."+outcome and "result."+outcome.
	for _, outcome := range []string{"approved", "denied", "expired", "unknown", "disabled", "limited", "error"} {
		for _, key := range []string{"title." + outcome, "result." + outcome} {
			if _, ok := english.messages[key]; !ok {
				t.Errorf("outcome key %q is missing from the English catalog", key)
			}
		}
	}
	for _, kind := range []string{"Smart TV", "Game console", "Phone", "Command-line app", "Device", "Unknown device"} {
		if got := (localizer{english}).DeviceKind(kind); got != kind {
			t.Errorf("device kind %q is shown as %q; its catalog key is missing", kind, got)
		}
	}
}

func TestCatalogsHaveEveryEnglishKey(t *testing.T) {
	for lang, c := range catalogs {
		for key := range english.messages {
			if _, ok := c.messages[key]; !ok {
				t.Errorf("catalog %s lacks %q", lang, key)
			}
		}
		if c.tag == "" || c.plural == nil {
			t.Errorf("catalog %s has no tag or no plural rule", lang)
		}
	}
}

func TestChooseCatalog(t *testing.T) {
	german := &catalog{tag: "de", messages: map[string]string{"title.consent": "Dieses Gerät erlauben?"}, plural: english.plural}
	catalogs["de"] = german
	t.Cleanup(func() { delete(catalogs, "de") })

	cases := []struct {
		header string
		want   string
	}{
		{"", "en"},
		{"de", "de"},
		{"de-CH", "de"},
		{"DE-at;q=0.7", "de"},
		{"fr, de;q=0.5", "de"},
		{"en;q=0.4, de;q=0.6", "de"},
		{"de;q=0, en", "en"},
		{"*, de;q=0.1", "en"},
		{"xx, yy", "en"},
		{"de;q=bogus", "en"},
	}
	for _, tc := range cases {
		if got := chooseCatalog(tc.header).tag; got != tc.want {
			t.Errorf("Accept-Language %q: chose %q, want %q", tc.header, got, tc.want)
		}
	}

	l := localizer{german}
	if got := l.T("title.consent"); got != "Dieses Gerät erlauben?" {
		t.Errorf("German title %q, want the German text", got)
	}
	if got := l.T("title.sign_in"); got != "Sign in" {
		t.Errorf("a key missing from German is %q, want the English %q", got, "Sign in")
	}
}

func TestLocalizerFormats(t *testing.T) {
	l := localizer{english}
	cases := []struct {
		name, got, want string
	}{
		{"one minute", l.Minutes(30 * time.Second), "1 minute"},
		{"minutes round up", l.Minutes(4*time.Minute + time.Second), "5 minutes"},
		{"spelt code", l.Spell("BCDF-GHJK"), "B C D F dash G H J K"},
		{"known scope", l.Scope("profile"), "See your profile name and viewing preferences"},
		{"unknown scope", l.Scope("admin"), "Access “admin”"},
		{"just now", l.Ago(59 * time.Second), "just now"},
		{"one minute ago", l.Ago(90 * time.Second), "1 minute ago"},
		{"minutes ago", l.Ago(7 * time.Minute), "7 minutes ago"},
		{"time in UTC", l.Time(time.Date(2026, 3, 1, 9, 5, 0, 0, time.FixedZone("x", 3600))), "1 Mar 2026, 08:05 UTC"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if !slices.Contains([]string{"one", "other"}, english.plural(2)) {
		t.Error("English plural rule returns an unknown category")
	}
}
