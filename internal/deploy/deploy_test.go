// Package deploy_test checks the files operators deploy with,
// docker-compose.yml, the Dockerfile and nats.conf, against the code: every
// file they name exists, every environment variable is one the binary reads,
// and every port is one something listens on. There is no container engine
// in the tests, so nothing is started.
package deploy_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"
)

const root = "../.."

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Hostname    string            `yaml:"hostname"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Secrets     []string          `yaml:"secrets"`
	DependsOn   map[string]any    `yaml:"depends_on"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("read docker-compose.yml: %v", err)
	}
	var c composeFile
	// yaml.v3 resolves the anchors and merge keys the file uses.
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml defines no services")
	}
	return c
}

// binaryEnv builds the command's binary and returns the environment
// variables its --help lists, so the check follows the flags as defined.
func binaryEnv(t *testing.T, dir, binary string) []string {
	t.Helper()
	out := filepath.Join(dir, binary)
	build := exec.Command("go", "build", "-o", out, "./cmd/"+binary)
	build.Dir = root
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", binary, err, msg)
	}
	help, _ := exec.Command(out, "-help").CombinedOutput()
	var names []string
	for _, m := range regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`).FindAllStringSubmatch(string(help), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("%s -help lists no environment variables:\n%s", binary, help)
	}
	return names
}

func TestComposeMatchesBinaries(t *testing.T) {
	compose := loadCompose(t)
	binDir := t.TempDir()
	envOf := map[string][]string{}
	for _, binary := range []string{"edge", "approver", "issuer"} {
		envOf[binary] = binaryEnv(t, binDir, binary)
	}

	counts := map[string]int{}
	for name, svc := range compose.Services {
		if svc.Build == "" {
			continue
		}
		if len(svc.Command) != 1 {
			t.Errorf("service %s: command %v, want the name of one binary", name, svc.Command)
			continue
		}
		binary := svc.Command[0]
		known, ok := envOf[binary]
		if !ok {
			t.Errorf("service %s runs %q, which is not a binary the Dockerfile builds", name, binary)
			continue
		}
		counts[binary]++

		for variable, value := range svc.Environment {
			if !slices.Contains(known, variable) {
				t.Errorf("service %s sets %s, which %s does not read", name, variable, binary)
			}
			if strings.HasSuffix(variable, "_FILE") && strings.HasPrefix(value, "/run/secrets/") {
				secret := strings.TrimPrefix(value, "/run/secrets/")
				if !slices.Contains(svc.Secrets, secret) {
					t.Errorf("service %s reads %s from secret %s but does not mount it", name, variable, secret)
				}
			}
		}
		for _, dep := range []string{"nats-1", "nats-2", "nats-3"} {
			if _, ok := svc.DependsOn[dep]; !ok {
				t.Errorf("service %s does not wait for %s", name, dep)
			}
		}
		checkNATSURL(t, name, svc.Environment["NATS_URL"], compose)
		if binary == "edge" {
			checkPublishedPort(t, name, svc, "EDGE_ADDR")
		}
		if svc.Environment["NATS_REPLICAS"] != "3" {
			t.Errorf("service %s: NATS_REPLICAS %q, want 3 on a three-node cluster", name, svc.Environment["NATS_REPLICAS"])
		}
	}
	if counts["edge"] < 2 || counts["approver"] < 1 || counts["issuer"] < 1 {
		t.Errorf("compose runs %v, want at least two edges, an approver and an issuer", counts)
	}

	for name, secret := range compose.Secrets {
		// The hash key is generated per deployment and never committed;
		// the operations guide says how.
		if !strings.HasPrefix(secret.File, "./secrets/") {
			t.Errorf("secret %s comes from %s, want a file under ./secrets/", name, secret.File)
		}
	}
	ops, err := os.ReadFile(filepath.Join(root, "docs", "OPERATIONS.md"))
	if err != nil || !strings.Contains(string(ops), "secrets/hash.key") {
		t.Errorf("docs/OPERATIONS.md does not explain how to create secrets/hash.key (%v)", err)
	}
}

// checkNATSURL checks that every server in url is a compose service
// listening on the nats.conf client port.
func checkNATSURL(t *testing.T, service, url string, compose composeFile) {
	t.Helper()
	if url == "" {
		t.Errorf("service %s sets no NATS_URL", service)
		return
	}
	for server := range strings.SplitSeq(url, ",") {
		host, port, err := net.SplitHostPort(strings.TrimPrefix(server, "nats://"))
		if err != nil {
			t.Errorf("service %s: NATS_URL entry %q: %v", service, server, err)
			continue
		}
		if _, ok := compose.Services[host]; !ok {
			t.Errorf("service %s: NATS_URL names %s, which is not a compose service", service, host)
		}
		if port != "4222" {
			t.Errorf("service %s: NATS_URL port %s, want nats.conf's client port 4222", service, port)
		}
	}
}

// checkPublishedPort checks that the port the service listens on, from the
// address in env variable addrVar, is the container port it publishes.
func checkPublishedPort(t *testing.T, service string, svc composeService, addrVar string) {
	t.Helper()
	_, port, err := net.SplitHostPort(svc.Environment[addrVar])
	if err != nil {
		t.Errorf("service %s: %s %q: %v", service, addrVar, svc.Environment[addrVar], err)
		return
	}
	if host, _, _ := net.SplitHostPort(svc.Environment[addrVar]); host != "0.0.0.0" {
		t.Errorf("service %s: %s listens on %q, unreachable from outside the container", service, addrVar, host)
	}
	for _, mapping := range svc.Ports {
		parts := strings.Split(mapping, ":")
		if parts[len(parts)-1] == port {
			return
		}
	}
	t.Errorf("service %s listens on port %s but publishes %v", service, port, svc.Ports)
}

func TestComposeMatchesNATSConf(t *testing.T) {
	compose := loadCompose(t)
	var natsServices []string
	for name, svc := range compose.Services {
		if strings.HasPrefix(svc.Image, "nats:") {
			natsServices = append(natsServices, name)
		}
	}
	if len(natsServices) != 3 {
		t.Fatalf("compose runs %d nats-servers, want 3", len(natsServices))
	}

	for _, name := range natsServices {
		svc := compose.Services[name]
		if !slices.Contains(svc.Volumes, "./nats.conf:/etc/nats/nats.conf:ro") {
			t.Errorf("service %s does not mount nats.conf at /etc/nats/nats.conf", name)
		}
		if svc.Hostname != name || svc.Environment["NATS_SERVER_NAME"] != name {
			t.Errorf("service %s: hostname %q and NATS_SERVER_NAME %q, want both %q to match the routes in nats.conf",
				name, svc.Hostname, svc.Environment["NATS_SERVER_NAME"], name)
		}
		if !slices.ContainsFunc(svc.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
			t.Errorf("service %s keeps no volume at /data, where nats.conf stores JetStream", name)
		}
		for variable, value := range svc.Environment {
			t.Setenv(variable, interpolate(value))
		}
	}

	// nats.conf loads with the environment the compose file gives it, and
	// its routes name exactly the compose services.
	opts, err := server.ProcessConfigFile(filepath.Join(root, "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf does not load with the compose environment: %v", err)
	}
	for _, route := range opts.Routes {
		if !slices.Contains(natsServices, route.Hostname()) {
			t.Errorf("nats.conf routes to %s, which is not a compose service", route.Host)
		}
		if route.Port() != "6222" || opts.Cluster.Port != 6222 {
			t.Errorf("route %s and cluster port %d, want 6222", route.Host, opts.Cluster.Port)
		}
	}
	if opts.Port != 4222 || opts.HTTPPort != 8222 || opts.StoreDir != "/data/jetstream" {
		t.Errorf("nats.conf: client port %d, monitoring port %d, store %s, want 4222, 8222 and /data/jetstream", opts.Port, opts.HTTPPort, opts.StoreDir)
	}

	users := map[string]bool{}
	for _, u := range opts.Users {
		users[u.Username] = true
	}
	for name, svc := range compose.Services {
		if user := svc.Environment["NATS_USER"]; user != "" && !users[user] {
			t.Errorf("service %s connects as %s, which nats.conf does not define", name, user)
		}
	}
}

func TestDockerfileReferencesExist(t *testing.T) {
	file, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatalf("open Dockerfile: %v", err)
	}
	defer file.Close()

	var exposed []string
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "COPY":
			if strings.HasPrefix(fields[1], "--from=") {
				continue
			}
			for _, src := range fields[1 : len(fields)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("Dockerfile copies %s: %v", src, err)
				}
			}
		case "RUN":
			for _, m := range regexp.MustCompile(`\./cmd/([a-z]+)`).FindAllStringSubmatch(scanner.Text(), -1) {
				if _, err := os.Stat(filepath.Join(root, "cmd", m[1], "main.go")); err != nil {
					t.Errorf("Dockerfile builds ./cmd/%s: %v", m[1], err)
				}
			}
		case "EXPOSE":
			exposed = fields[1:]
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}

	compose := loadCompose(t)
	for name, svc := range compose.Services {
		if svc.Build == "" {
			continue
		}
		for _, variable := range []string{"EDGE_ADDR", "DEBUG_ADDR"} {
			if addr, ok := svc.Environment[variable]; ok {
				_, port, _ := net.SplitHostPort(addr)
				if !slices.Contains(exposed, port) {
					t.Errorf("service %s listens on %s (%s), which the Dockerfile does not expose (%v)", name, port, variable, exposed)
				}
			}
		}
	}
}

// interpolate replaces compose's "${NAME:?message}" with a sample password
// made of letters, as an operator's shell would with a real one, and
// "${NAME:-default}" with the default.
func interpolate(value string) string {
	return regexp.MustCompile(`\$\{([A-Z_]+):([?-])([^}]*)\}`).ReplaceAllStringFunc(value, func(m string) string {
		parts := regexp.MustCompile(`\$\{([A-Z_]+):([?-])([^}]*)\}`).FindStringSubmatch(m)
		if parts[2] == "-" {
			return parts[3]
		}
		return "sample" + strings.ToLower(strings.ReplaceAll(parts[1], "_", ""))
	})
}
